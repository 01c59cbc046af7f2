//! Page titles as listing pages show them: the store's kept title of each
//! page ([`Store::titles`](crate::store::Store::titles)), remembered for a
//! reading's time to live so that a listing page read again and again
//! costs no store call for its titles.
//!
//! Owns [`TitleCache`]. Knows nothing of HTTP or of how titles are
//! written; bounded per site.

use std::collections::HashMap;
use std::sync::Arc;

/// Most titles remembered per site. Past it, the expired ones are
/// dropped, and if none had expired, all of the site's (a listing reads
/// them again at its next request: one store call).
pub const TITLES_KEPT: usize = 20_000;

/// A remembered title: the text (`None`: the store has none) and when it
/// was read (Unix milliseconds).
type Entry = (Option<Arc<str>>, i64);
/// One site's remembered titles, by page.
type SiteTitles = HashMap<Arc<str>, Entry>;

/// Titles remembered per site and page.
#[derive(Default)]
pub struct TitleCache {
    sites: parking_lot::Mutex<HashMap<Arc<str>, SiteTitles>>,
}

impl TitleCache {
    /// For each of `pages` (in order) the remembered title younger than
    /// `ttl_ms` at `now_ms`: `Some(title)` (a title or none), or `None`
    /// when it must be read. One lock for all the pages.
    pub fn get(
        &self,
        site: &str,
        pages: &[&str],
        now_ms: i64,
        ttl_ms: i64,
    ) -> Vec<Option<Option<Arc<str>>>> {
        let sites = self.sites.lock();
        let kept = sites.get(site);
        pages
            .iter()
            .map(|page| {
                let (title, at) = kept?.get(*page)?;
                (now_ms - at < ttl_ms).then(|| title.clone())
            })
            .collect()
    }

    /// Remembers titles read at `now_ms`.
    pub fn put(
        &self,
        site: &Arc<str>,
        read: impl IntoIterator<Item = (Arc<str>, Option<Arc<str>>)>,
        now_ms: i64,
        ttl_ms: i64,
    ) {
        let mut sites = self.sites.lock();
        let kept = sites.entry(Arc::clone(site)).or_default();
        for (page, title) in read {
            if kept.len() >= TITLES_KEPT && !kept.contains_key(&page) {
                kept.retain(|_, (_, at)| now_ms - *at < ttl_ms);
                if kept.len() >= TITLES_KEPT {
                    kept.clear();
                }
            }
            kept.insert(page, (title, now_ms));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_are_given_while_young_and_bounded() {
        let cache = TitleCache::default();
        let site: Arc<str> = Arc::from("s");
        cache.put(
            &site,
            [
                (Arc::from("/a"), Some(Arc::from("A"))),
                (Arc::from("/b"), None),
            ],
            1_000,
            100,
        );
        let got = cache.get("s", &["/a", "/b", "/c"], 1_050, 100);
        assert_eq!(got, vec![Some(Some(Arc::from("A"))), Some(None), None]);
        assert_eq!(cache.get("s", &["/a"], 1_100, 100), vec![None], "expired");
        assert_eq!(cache.get("t", &["/a"], 1_050, 100), vec![None], "per site");
        let many = (0..TITLES_KEPT + 5).map(|i| (Arc::from(format!("/p{i}")), None));
        cache.put(&site, many, 2_000, 100);
        assert!(cache.sites.lock()["s"].len() <= TITLES_KEPT);
    }
}
