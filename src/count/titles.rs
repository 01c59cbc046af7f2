//! The last title seen of each page, kept for the next flush.
//!
//! Invariant: noting a title a page already has (the common case: every
//! beacon of a page carries the same `document.title`) allocates nothing
//! and takes only a shard's read lock, one lookup and one string
//! comparison. A changed title is stored and its page queued once for the
//! flusher, which takes the changed titles into the next batch.
//!
//! Bounded by the pages the tally keeps: ingest notes a title only for a
//! hit counted for its page. Knows nothing of stores or batches.

use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::Mutex;

/// A page's title, and whether the flusher has still to take it.
#[derive(Debug)]
struct Entry {
    title: Arc<str>,
    changed: bool,
}

/// The pages' last titles of one site.
#[derive(Debug, Default)]
pub struct PageTitles {
    titles: DashMap<Arc<str>, Entry>,
    /// Pages whose title changed since the flusher last took them, each
    /// once (its entry's `changed` says it is queued).
    changed: Mutex<Vec<Arc<str>>>,
}

impl PageTitles {
    pub fn new() -> Self {
        Self::default()
    }

    /// Notes that `page` (the tally's key for it, shared rather than
    /// copied) was just seen with `title`.
    pub fn note(&self, page: &Arc<str>, title: &str) {
        if let Some(entry) = self.titles.get(&**page)
            && *entry.title == *title
        {
            return;
        }
        let title: Arc<str> = Arc::from(title);
        let queue = match self.titles.get_mut(&**page) {
            Some(mut entry) => {
                entry.title = title;
                let queued = std::mem::replace(&mut entry.changed, true);
                (!queued).then(|| Arc::clone(entry.key()))
            }
            None => {
                let page = Arc::clone(page);
                let entry = Entry {
                    title,
                    changed: true,
                };
                // Another hit may have inserted it meanwhile: then it is
                // queued already, and this title replaces its.
                match self.titles.insert(Arc::clone(&page), entry) {
                    Some(old) if old.changed => None,
                    _ => Some(page),
                }
            }
        };
        if let Some(page) = queue {
            self.changed.lock().push(page);
        }
    }

    /// Takes the titles changed since the last call, `(page, title)`,
    /// each page once, appending them to `out`.
    pub fn take(&self, out: &mut Vec<(Arc<str>, Arc<str>)>) {
        let pages = std::mem::take(&mut *self.changed.lock());
        for page in pages {
            if let Some(mut entry) = self.titles.get_mut(&page) {
                entry.changed = false;
                out.push((page, Arc::clone(&entry.title)));
            }
        }
    }

    /// The title last seen of `page`, if this instance saw one.
    pub fn get(&self, page: &str) -> Option<Arc<str>> {
        self.titles.get(page).map(|e| Arc::clone(&e.title))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taken(t: &PageTitles) -> Vec<(String, String)> {
        let mut out = Vec::new();
        t.take(&mut out);
        out.iter()
            .map(|(p, t)| (p.to_string(), t.to_string()))
            .collect()
    }

    #[test]
    fn a_changed_title_is_taken_once_and_an_unchanged_one_not_again() {
        let t = PageTitles::new();
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("/a"), Arc::from("/b"));
        t.note(&a, "A");
        t.note(&a, "A");
        t.note(&b, "B");
        t.note(&b, "B2");
        let mut first = taken(&t);
        first.sort();
        assert_eq!(
            first,
            vec![("/a".into(), "A".into()), ("/b".into(), "B2".into())]
        );
        t.note(&a, "A");
        assert!(taken(&t).is_empty(), "an unchanged title is not sent again");
        t.note(&a, "A2");
        assert_eq!(taken(&t), vec![("/a".into(), "A2".into())]);
        assert_eq!(t.get("/a").as_deref(), Some("A2"));
        assert_eq!(t.get("/c"), None);
    }

    #[test]
    fn an_unchanged_title_is_not_stored_again() {
        let t = PageTitles::new();
        let a: Arc<str> = Arc::from("/a");
        t.note(&a, "A");
        let kept = t.get("/a").unwrap();
        t.note(&a, &String::from("A"));
        assert!(Arc::ptr_eq(&kept, &t.get("/a").unwrap()));
        let shared = t.titles.iter().next().map(|e| Arc::clone(e.key())).unwrap();
        assert!(Arc::ptr_eq(&shared, &a), "the page's name is the tally's");
    }
}
