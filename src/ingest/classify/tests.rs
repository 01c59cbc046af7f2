//! Classification tables from real referrers and User-Agents, the rule
//! order, and properties over any input.
use std::sync::OnceLock;

use proptest::prelude::*;

use super::*;

/// One classifier for the whole test binary.
fn classifier() -> &'static Classifier {
    static C: OnceLock<Classifier> = OnceLock::new();
    C.get_or_init(|| Classifier::new().expect("shipped sources build"))
}

const SITE: &[&str] = &["news.example", "www.tin.example"];

// Real User-Agents (the bot guard's browser list and current releases).
const CHROME_WIN: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
const CHROME_ANDROID: &str = "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36";
const CHROME_DESKTOP_MODE: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
const ZALO_ANDROID: &str = "Mozilla/5.0 (Linux; Android 13; SM-A536E Build/TP1A.220624.014; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/128.0.6613.146 Mobile Safari/537.36 Zalo android/12100630 ZaloTheme/light ZaloLanguage/vi";
const ZALO_IOS: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 Zalo iOS/638 ZaloTheme/light ZaloLanguage/vn";
const FACEBOOK_IOS: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/470.0.0.40.97;FBBV/600000000;FBDV/iPhone15,2;FBMD/iPhone;FBSN/iOS;FBSV/17.5;FBSS/3;FBLC/vi_VN;FBOP/5;FBRV/0]";
const FACEBOOK_ANDROID: &str = "Mozilla/5.0 (Linux; Android 14; SM-S918B Build/UP1A.231005.007; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/131.0.6778.39 Mobile Safari/537.36 [FB_IAB/FB4A;FBAV/489.0.0.66.81;]";
const MESSENGER_IOS: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [FBAN/MessengerForiOS;FBAV/470.0.0.40.97;FBBV/600000000;FBDV/iPhone15,2;FBMD/iPhone;FBSN/iOS;FBSV/17.5;FBSS/3;FBCR/;FBID/phone;FBLC/vi_VN;FBOP/5]";
const MESSENGER_ANDROID: &str = "Mozilla/5.0 (Linux; Android 13; SM-A525F Build/TP1A.220624.014; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/131.0.6778.39 Mobile Safari/537.36 [FB_IAB/Orca-Android;FBAV/485.0.0.70.77;]";
const INSTAGRAM_IOS: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 Instagram 356.0.0.25.109 (iPhone15,3; iOS 18_1; en_US; en; scale=3.00; 1290x2796; 656429547; IABMV/1)";
const INSTAGRAM_ANDROID: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8 Build/AP2A.240905.003; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/130.0.6723.102 Mobile Safari/537.36 Instagram 354.0.0.43.97 Android (34/14; 420dpi; 1080x2205; Google/google; Pixel 8; shiba; shiba; en_US; 648963521)";
const TIKTOK_ANDROID: &str = "Mozilla/5.0 (Linux; Android 13; SM-A536B Build/TP1A.220624.014; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/128.0.6613.127 Mobile Safari/537.36 trill_370104 JsSdk/1.0 NetType/WIFI Channel/googleplay AppName/trill app_version/37.1.4 ByteLocale/vi ByteFullLocale/vi Region/VN AppId/1180 Spark/1.6.3.5-bugfix AppVersion/37.1.4 BytedanceWebview/d8a21c6";
const TIKTOK_IOS: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 musical_ly_37.0.0 JsSdk/2.0 NetType/WIFI Channel/App Store ByteLocale/en Region/US RevealType/Dialog isDarkMode/0 WKWebView/1 BytedanceWebview/d8a21c6 FalconTag/";
const LINE_IOS: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 Safari Line/14.9.0";
const LINE_ANDROID: &str = "Mozilla/5.0 (Linux; Android 13; SM-G991B Build/TP1A.220624.014; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/124.0.6367.82 Mobile Safari/537.36 Line/14.7.1/IAB";

use Browser as B;
use Device as D;
use Os as O;

/// User-Agent → browser, system, device, in-app browser.
const AGENTS: &[(&str, Browser, Os, Device, Option<InApp>)] = &[
    (CHROME_WIN, B::Chrome, O::Windows, D::Desktop, None),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36",
        B::Chrome,
        O::MacOs,
        D::Desktop,
        None,
    ),
    (CHROME_DESKTOP_MODE, B::Chrome, O::Linux, D::Desktop, None),
    (
        "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/129.0.0.0 Safari/537.36",
        B::Chrome,
        O::ChromeOs,
        D::Desktop,
        None,
    ),
    (CHROME_ANDROID, B::Chrome, O::Android, D::Mobile, None),
    (
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/125.0.0.0 Safari/537.36",
        B::Chrome,
        O::Android,
        D::Tablet,
        None,
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_7 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/131.0.6778.73 Mobile/15E148 Safari/604.1",
        B::Chrome,
        O::Ios,
        D::Mobile,
        None,
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
        B::Safari,
        O::Ios,
        D::Mobile,
        None,
    ),
    (
        "Mozilla/5.0 (iPad; CPU OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1",
        B::Safari,
        O::IpadOs,
        D::Tablet,
        None,
    ),
    // iPadOS asking for desktop pages cannot be told from a Mac.
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.0 Safari/605.1.15",
        B::Safari,
        O::MacOs,
        D::Desktop,
        None,
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
        B::Firefox,
        O::Windows,
        D::Desktop,
        None,
    ),
    (
        "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
        B::Firefox,
        O::Linux,
        D::Desktop,
        None,
    ),
    (
        "Mozilla/5.0 (Android 14; Mobile; rv:133.0) Gecko/133.0 Firefox/133.0",
        B::Firefox,
        O::Android,
        D::Mobile,
        None,
    ),
    (
        "Mozilla/5.0 (Android 14; Tablet; rv:133.0) Gecko/133.0 Firefox/133.0",
        B::Firefox,
        O::Android,
        D::Tablet,
        None,
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_7 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) FxiOS/133.0 Mobile/15E148 Safari/605.1.15",
        B::Firefox,
        O::Ios,
        D::Mobile,
        None,
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
        B::Edge,
        O::Windows,
        D::Desktop,
        None,
    ),
    (
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Mobile Safari/537.36 EdgA/130.0.0.0",
        B::Edge,
        O::Android,
        D::Mobile,
        None,
    ),
    (
        "Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S928B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36",
        B::SamsungInternet,
        O::Android,
        D::Mobile,
        None,
    ),
    (
        "Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/25.0 Chrome/121.0.0.0 Safari/537.36",
        B::SamsungInternet,
        O::Android,
        D::Tablet,
        None,
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36 OPR/115.0.0.0",
        B::Opera,
        O::Windows,
        D::Desktop,
        None,
    ),
    (
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Mobile Safari/537.36 OPR/85.0.0.0",
        B::Opera,
        O::Android,
        D::Mobile,
        None,
    ),
    (
        "Opera/9.80 (J2ME/MIDP; Opera Mini/9.80 (S60; SymbOS; Opera Mobi/23.348; U; en) Presto/2.5.25 Version/10.54",
        B::Opera,
        O::Other,
        D::Mobile,
        None,
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/128.0.0.0 YaBrowser/24.10.0.0 Safari/537.36",
        B::Yandex,
        O::Windows,
        D::Desktop,
        None,
    ),
    (
        "Mozilla/5.0 (Linux; U; Android 13; en-US; 2201117TG Build/TKQ1.221114.001) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/123.0.6312.80 UCBrowser/13.7.5.1321 Mobile Safari/537.36",
        B::UcBrowser,
        O::Android,
        D::Mobile,
        None,
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) coc_coc_browser/128.0.186 Chrome/122.0.6261.186 Safari/537.36",
        B::CocCoc,
        O::Windows,
        D::Desktop,
        None,
    ),
    (
        "Mozilla/5.0 (Linux; Android 13; SM-A325F) AppleWebKit/537.36 (KHTML, like Gecko) coc_coc_browser/130.0.246 Chrome/124.0.6367.246 Mobile Safari/537.36",
        B::CocCoc,
        O::Android,
        D::Mobile,
        None,
    ),
    (
        ZALO_ANDROID,
        B::Zalo,
        O::Android,
        D::Mobile,
        Some(InApp::Zalo),
    ),
    (ZALO_IOS, B::Zalo, O::Ios, D::Mobile, Some(InApp::Zalo)),
    (
        FACEBOOK_IOS,
        B::Facebook,
        O::Ios,
        D::Mobile,
        Some(InApp::Facebook),
    ),
    (
        FACEBOOK_ANDROID,
        B::Facebook,
        O::Android,
        D::Mobile,
        Some(InApp::Facebook),
    ),
    (
        "Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/470.0.0.40.97;FBDV/iPad13,1;FBMD/iPad;FBSN/iPadOS;FBSV/17.5]",
        B::Facebook,
        O::IpadOs,
        D::Tablet,
        Some(InApp::Facebook),
    ),
    (
        MESSENGER_IOS,
        B::Messenger,
        O::Ios,
        D::Mobile,
        Some(InApp::Messenger),
    ),
    (
        MESSENGER_ANDROID,
        B::Messenger,
        O::Android,
        D::Mobile,
        Some(InApp::Messenger),
    ),
    (
        INSTAGRAM_IOS,
        B::Instagram,
        O::Ios,
        D::Mobile,
        Some(InApp::Instagram),
    ),
    (
        INSTAGRAM_ANDROID,
        B::Instagram,
        O::Android,
        D::Mobile,
        Some(InApp::Instagram),
    ),
    (
        TIKTOK_ANDROID,
        B::TikTok,
        O::Android,
        D::Mobile,
        Some(InApp::TikTok),
    ),
    (
        TIKTOK_IOS,
        B::TikTok,
        O::Ios,
        D::Mobile,
        Some(InApp::TikTok),
    ),
    (LINE_IOS, B::Line, O::Ios, D::Mobile, Some(InApp::Line)),
    (
        LINE_ANDROID,
        B::Line,
        O::Android,
        D::Mobile,
        Some(InApp::Line),
    ),
    (
        "Mozilla/5.0 (Linux; Android 14; Pixel 7 Build/AP2A.240805.005; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/127.0.6533.103 Mobile Safari/537.36",
        B::AndroidWebView,
        O::Android,
        D::Mobile,
        None,
    ),
    // Kindle Fire: Silk, a tablet, whatever its User-Agent says.
    (
        "Mozilla/5.0 (Linux; Android 9; KFTRWI) AppleWebKit/537.36 (KHTML, like Gecko) Silk/131.2.1 like Chrome/131.0.6778.135 Safari/537.36",
        B::Other,
        O::Android,
        D::Tablet,
        None,
    ),
    (
        "Mozilla/5.0 (X11; U; Linux armv7l like Android; en-us) AppleWebKit/531.2+ (KHTML, like Gecko) Version/5.0 Safari/533.2+ Kindle/3.0+",
        B::Other,
        O::Android,
        D::Tablet,
        None,
    ),
    // The Google app on iOS: a web view, not Safari.
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) GSA/343.0.695551749 Mobile/15E148 Safari/604.1",
        B::Other,
        O::Ios,
        D::Mobile,
        None,
    ),
    ("", B::Other, O::Other, D::Desktop, None),
    ("something/1.0", B::Other, O::Other, D::Desktop, None),
];

#[test]
fn user_agents_give_browser_system_device_and_app() {
    let c = classifier();
    let mut wrong = Vec::new();
    for &(ua, browser, os, device, in_app) in AGENTS {
        let want = Agent {
            browser,
            os,
            device,
            in_app,
        };
        // Twice: the parse, then the cache.
        for _ in 0..2 {
            let got = c.agent(ua.as_bytes(), ClientHints::default());
            if got != want {
                wrong.push(format!("{ua}\n  want {want:?}\n  got  {got:?}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

fn hints<'a>(brands: &'a str, mobile: &'a str, platform: &'a str) -> ClientHints<'a> {
    let some = |s: &'a str| (!s.is_empty()).then_some(s.as_bytes());
    ClientHints {
        ua: some(brands),
        mobile: some(mobile),
        platform: some(platform),
    }
}

#[test]
fn client_hints_win_over_the_user_agent_where_they_speak() {
    let c = classifier();
    let chrome = r#""Chromium";v="131", "Google Chrome";v="131", "Not_A Brand";v="24""#;
    let agent = |ua: &str, h| c.agent(ua.as_bytes(), h);
    // A phone: agrees with the User-Agent.
    let a = agent(CHROME_ANDROID, hints(chrome, "?1", "\"Android\""));
    assert_eq!(
        (a.browser, a.os, a.device),
        (B::Chrome, O::Android, D::Mobile)
    );
    // An Android tablet asking for desktop pages: the UA says Linux.
    let a = agent(CHROME_DESKTOP_MODE, hints(chrome, "?0", "\"Android\""));
    assert_eq!((a.os, a.device), (O::Android, D::Tablet));
    // A platform hint beats the User-Agent's system.
    let a = agent(CHROME_WIN, hints(chrome, "?0", "\"macOS\""));
    assert_eq!((a.os, a.device), (O::MacOs, D::Desktop));
    let a = agent(CHROME_WIN, hints(chrome, "?0", "\"Chrome OS\""));
    assert_eq!(a.os, O::ChromeOs);
    // `?1` makes any User-Agent mobile.
    assert_eq!(agent(CHROME_WIN, hints("", "?1", "")).device, D::Mobile);
    // A brand names what the reduced Chrome User-Agent cannot.
    let edge = r#""Microsoft Edge";v="131", "Chromium";v="131", "Not_A Brand";v="24""#;
    assert_eq!(
        agent(CHROME_WIN, hints(edge, "?0", "\"Windows\"")).browser,
        B::Edge
    );
    let webview = r#""Android WebView";v="131", "Chromium";v="131""#;
    assert_eq!(
        agent(CHROME_ANDROID, hints(webview, "?1", "")).browser,
        B::AndroidWebView
    );
    // Unknown brands and platforms leave the User-Agent's answer.
    let bare = r#""Chromium";v="131", "Not_A Brand";v="24""#;
    let a = agent(CHROME_WIN, hints(bare, "", "\"Unknown\""));
    assert_eq!(
        (a.browser, a.os, a.device),
        (B::Chrome, O::Windows, D::Desktop)
    );
    // An in-app browser keeps its app: the hints cannot tell it.
    let a = agent(ZALO_ANDROID, hints(webview, "?1", "\"Android\""));
    assert_eq!((a.browser, a.in_app), (B::Zalo, Some(InApp::Zalo)));
    // Cốc Cốc's brand (as it sends it) names it behind a Chrome User-Agent.
    let coccoc_brand = r#""CocCoc";v="135", "Not-A.Brand";v="8", "Chromium";v="129""#;
    assert_eq!(
        agent(CHROME_ANDROID, hints(coccoc_brand, "?1", "\"Android\"")).browser,
        B::CocCoc
    );
    // Cốc Cốc names itself in the User-Agent; a Chrome brand does not undo it.
    let coccoc = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) coc_coc_browser/128.0.186 Chrome/122.0.6261.186 Safari/537.36";
    assert_eq!(
        agent(coccoc, hints(chrome, "?0", "\"Windows\"")).browser,
        B::CocCoc
    );
}

/// `(referrer, page, user agent)` → `(channel, source)`.
type Case = (
    Option<&'static str>,
    &'static str,
    &'static str,
    Channel,
    &'static str,
);

use Channel as C;

const REFERRERS: &[Case] = &[
    // Search, with Google Discover and the Google app.
    (
        Some("https://www.google.com/"),
        "/a",
        CHROME_WIN,
        C::Search,
        "Google",
    ),
    (
        Some("https://www.google.com.vn/"),
        "/a",
        CHROME_WIN,
        C::Search,
        "Google",
    ),
    (
        Some("https://google.de/search?q=x"),
        "/a",
        CHROME_WIN,
        C::Search,
        "Google",
    ),
    (
        Some("android-app://com.google.android.googlequicksearchbox/"),
        "/a",
        CHROME_ANDROID,
        C::Search,
        "Google",
    ),
    (
        Some("android-app://com.google.android.googlequicksearchbox/https/www.google.com"),
        "/a",
        CHROME_ANDROID,
        C::Search,
        "Google",
    ),
    (
        Some("https://coccoc.com/search?query=tin+t%E1%BB%A9c"),
        "/a",
        CHROME_WIN,
        C::Search,
        "Cốc Cốc",
    ),
    (
        Some("https://www.bing.com/search?q=x"),
        "/a",
        CHROME_WIN,
        C::Search,
        "Bing",
    ),
    (
        Some("https://search.yahoo.com/"),
        "/a",
        CHROME_WIN,
        C::Search,
        "Yahoo",
    ),
    (
        Some("https://vn.yahoo.com/"),
        "/a",
        CHROME_WIN,
        C::Search,
        "Yahoo",
    ),
    (
        Some("https://duckduckgo.com/"),
        "/a",
        CHROME_WIN,
        C::Search,
        "DuckDuckGo",
    ),
    (
        Some("https://yandex.ru/"),
        "/a",
        CHROME_WIN,
        C::Search,
        "Yandex",
    ),
    (
        Some("https://www.baidu.com/"),
        "/a",
        CHROME_WIN,
        C::Search,
        "Baidu",
    ),
    (
        Some("https://search.naver.com/"),
        "/a",
        CHROME_WIN,
        C::Search,
        "Naver",
    ),
    // News.
    (
        Some("https://news.google.com/"),
        "/a",
        CHROME_WIN,
        C::News,
        "Google News",
    ),
    (
        Some("android-app://com.google.android.apps.magazines"),
        "/a",
        CHROME_ANDROID,
        C::News,
        "Google News",
    ),
    (
        Some("https://baomoi.com/"),
        "/a",
        CHROME_ANDROID,
        C::News,
        "Báo Mới",
    ),
    (
        Some("https://m.baomoi.com/tin-moi.epi"),
        "/a",
        CHROME_ANDROID,
        C::News,
        "Báo Mới",
    ),
    // Email.
    (
        Some("https://mail.google.com/"),
        "/a",
        CHROME_WIN,
        C::Email,
        "Gmail",
    ),
    (
        Some("https://outlook.live.com/"),
        "/a",
        CHROME_WIN,
        C::Email,
        "Outlook",
    ),
    (
        Some("https://outlook.office.com/mail/"),
        "/a",
        CHROME_WIN,
        C::Email,
        "Outlook",
    ),
    (
        Some("https://mail.yahoo.com/"),
        "/a",
        CHROME_WIN,
        C::Email,
        "Yahoo Mail",
    ),
    // Social.
    (
        Some("https://l.facebook.com/l.php?u=https%3A%2F%2Fnews.example%2Fa"),
        "/a",
        FACEBOOK_ANDROID,
        C::Social,
        "Facebook",
    ),
    (
        Some("https://lm.facebook.com/"),
        "/a",
        FACEBOOK_ANDROID,
        C::Social,
        "Facebook",
    ),
    (
        Some("https://m.facebook.com/"),
        "/a",
        CHROME_ANDROID,
        C::Social,
        "Facebook",
    ),
    (
        Some("https://www.facebook.com/"),
        "/a",
        CHROME_WIN,
        C::Social,
        "Facebook",
    ),
    (
        Some("https://fb.com/"),
        "/a",
        CHROME_WIN,
        C::Social,
        "Facebook",
    ),
    (
        Some("android-app://com.facebook.katana/"),
        "/a",
        CHROME_ANDROID,
        C::Social,
        "Facebook",
    ),
    (
        Some("https://www.messenger.com/"),
        "/a",
        CHROME_WIN,
        C::Social,
        "Messenger",
    ),
    (
        Some("https://www.instagram.com/"),
        "/a",
        CHROME_WIN,
        C::Social,
        "Instagram",
    ),
    (
        Some("https://www.tiktok.com/"),
        "/a",
        CHROME_WIN,
        C::Social,
        "TikTok",
    ),
    (
        Some("https://old.reddit.com/r/vietnam"),
        "/a",
        CHROME_WIN,
        C::Social,
        "Reddit",
    ),
    (
        Some("https://www.linkedin.com/feed/"),
        "/a",
        CHROME_WIN,
        C::Social,
        "LinkedIn",
    ),
    (
        Some("https://lnkd.in/abc"),
        "/a",
        CHROME_WIN,
        C::Social,
        "LinkedIn",
    ),
    (
        Some("https://t.me/s/channel"),
        "/a",
        CHROME_WIN,
        C::Social,
        "Telegram",
    ),
    (
        Some("https://web.telegram.org/"),
        "/a",
        CHROME_WIN,
        C::Social,
        "Telegram",
    ),
    (
        Some("https://www.youtube.com/"),
        "/a",
        CHROME_WIN,
        C::Social,
        "YouTube",
    ),
    (
        Some("https://youtu.be/x"),
        "/a",
        CHROME_WIN,
        C::Social,
        "YouTube",
    ),
    (Some("https://t.co/abc"), "/a", CHROME_WIN, C::Social, "X"),
    (
        Some("https://twitter.com/"),
        "/a",
        CHROME_WIN,
        C::Social,
        "X",
    ),
    (Some("https://x.com/"), "/a", CHROME_WIN, C::Social, "X"),
    (
        Some("https://chat.zalo.me/"),
        "/a",
        CHROME_WIN,
        C::Social,
        "Zalo",
    ),
    (
        Some("https://zalo.me/g/abc"),
        "/a",
        CHROME_WIN,
        C::Social,
        "Zalo",
    ),
    (
        Some("https://id.zaloapp.com/"),
        "/a",
        CHROME_WIN,
        C::Social,
        "Zalo",
    ),
    // Any other referrer: the host only, without its front door.
    (
        Some("https://www.vnexpress.net/thoi-su/abc.html?x=1#c"),
        "/a",
        CHROME_WIN,
        C::Referral,
        "vnexpress.net",
    ),
    (
        Some("https://M.Dantri.com.vn/x"),
        "/a",
        CHROME_WIN,
        C::Referral,
        "dantri.com.vn",
    ),
    (
        Some("https://mobile.twitter.example/x"),
        "/a",
        CHROME_WIN,
        C::Referral,
        "twitter.example",
    ),
    (
        Some("http://user:secret@blog.example.org:8080/p?q"),
        "/a",
        CHROME_WIN,
        C::Referral,
        "blog.example.org",
    ),
    (
        Some("android-app://com.zing.zalo/"),
        "/a",
        CHROME_ANDROID,
        C::Referral,
        "com.zing.zalo",
    ),
    // The site's own hosts.
    (
        Some("https://news.example/other"),
        "/a",
        CHROME_WIN,
        C::Internal,
        INTERNAL,
    ),
    (
        Some("https://WWW.news.example:443/"),
        "/a",
        CHROME_WIN,
        C::Internal,
        INTERNAL,
    ),
    (
        Some("https://tin.example/"),
        "/a",
        CHROME_WIN,
        C::Internal,
        INTERNAL,
    ),
    // In-app browsers without a referrer count as their app.
    (None, "/a", ZALO_ANDROID, C::Social, "Zalo"),
    (None, "/a", ZALO_IOS, C::Social, "Zalo"),
    (None, "/a", FACEBOOK_IOS, C::Social, "Facebook"),
    (None, "/a", MESSENGER_ANDROID, C::Social, "Messenger"),
    (None, "/a", INSTAGRAM_IOS, C::Social, "Instagram"),
    (None, "/a", TIKTOK_ANDROID, C::Social, "TikTok"),
    (None, "/a", LINE_IOS, C::Social, "LINE"),
    (Some(""), "/a", ZALO_ANDROID, C::Social, "Zalo"),
    // ... and with one, as the referrer says.
    (
        Some("https://www.google.com/"),
        "/a",
        ZALO_ANDROID,
        C::Search,
        "Google",
    ),
    (
        Some("https://m.facebook.com/"),
        "/a",
        FACEBOOK_ANDROID,
        C::Social,
        "Facebook",
    ),
    // No referrer, a campaign.
    (
        None,
        "/a?utm_source=Zalo_OA&utm_medium=social",
        CHROME_ANDROID,
        C::Referral,
        "zalo_oa",
    ),
    // Nothing.
    (None, "/a", CHROME_WIN, C::Direct, DIRECT),
    (Some("not a url"), "/a", CHROME_WIN, C::Direct, DIRECT),
    (
        Some("file:///home/me/page.html"),
        "/a",
        CHROME_WIN,
        C::Direct,
        DIRECT,
    ),
];

/// The rules' order, each case against the rule after it.
const RULE_ORDER: &[Case] = &[
    // 1 before 3: an email link opened from Facebook is email, and names
    // the campaign's source...
    (
        Some("https://l.facebook.com/"),
        "/a?utm_source=weekly&utm_medium=email",
        CHROME_WIN,
        C::Email,
        "weekly",
    ),
    // ... or, without one, the referrer's.
    (
        Some("https://l.facebook.com/"),
        "/a?utm_medium=Newsletter",
        CHROME_WIN,
        C::Email,
        "Facebook",
    ),
    // 1 before 2.
    (
        Some("https://news.example/"),
        "/a?utm_medium=email",
        CHROME_WIN,
        C::Email,
        INTERNAL,
    ),
    // 1 before 5 and 7.
    (None, "/a?utm_medium=email", ZALO_ANDROID, C::Email, "Zalo"),
    (None, "/a?utm_medium=email", CHROME_WIN, C::Email, DIRECT),
    (None, "/a?utm_medium=+EMAIL+", CHROME_WIN, C::Email, DIRECT),
    // Another medium is not email.
    (
        None,
        "/a?utm_source=x&utm_medium=emails",
        CHROME_WIN,
        C::Referral,
        "x",
    ),
    // 2 before 3: the site's own page, even with a campaign source.
    (
        Some("https://www.news.example/home"),
        "/a?utm_source=facebook&utm_medium=social",
        CHROME_WIN,
        C::Internal,
        INTERNAL,
    ),
    // 3 before 4: a named source is not a bare host.
    (
        Some("https://m.facebook.com/story.php?id=1"),
        "/a",
        CHROME_WIN,
        C::Social,
        "Facebook",
    ),
    // 4 before 5: a referrer beats the in-app browser.
    (
        Some("https://vnexpress.net/"),
        "/a",
        ZALO_ANDROID,
        C::Referral,
        "vnexpress.net",
    ),
    // 4 before 6: a referrer beats the campaign source.
    (
        Some("https://vnexpress.net/"),
        "/a?utm_source=partner",
        CHROME_WIN,
        C::Referral,
        "vnexpress.net",
    ),
    // 5 before 6.
    (
        None,
        "/a?utm_source=partner",
        ZALO_ANDROID,
        C::Social,
        "Zalo",
    ),
    // 6 before 7.
    (
        None,
        "/a?utm_source=partner",
        CHROME_WIN,
        C::Referral,
        "partner",
    ),
];

fn check(cases: &[Case]) {
    let c = classifier();
    let mut wrong = Vec::new();
    for &(referrer, page, ua, channel, source) in cases {
        let hit = Hit {
            page,
            referrer,
            user_agent: ua.as_bytes(),
            hints: ClientHints::default(),
        };
        let d = c.classify(&hit, SITE);
        if d.channel != channel || d.source != source {
            wrong.push(format!(
                "{referrer:?} {page} {ua:.40}\n  want {channel:?} {source:?}\n  got  {:?} {:?}",
                d.channel,
                d.source.as_str()
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn referrers_give_channel_and_source() {
    check(REFERRERS);
}

#[test]
fn the_first_rule_that_matches_decides() {
    check(RULE_ORDER);
}

#[test]
fn a_hit_carries_every_dimension() {
    let hit = Hit {
        page: "https://news.example/a?utm_source=Zalo&utm_medium=OA&utm_campaign=T%E1%BA%BFt+2027",
        referrer: None,
        user_agent: ZALO_IOS.as_bytes(),
        hints: ClientHints::default(),
    };
    let d = classifier().classify(&hit, SITE);
    assert_eq!(d.channel, Channel::Social);
    assert_eq!(d.source, "Zalo");
    assert_eq!(d.utm_source, "zalo");
    assert_eq!(d.utm_medium, "oa");
    assert_eq!(d.utm_campaign, "tết 2027");
    assert_eq!((d.browser, d.os, d.device), (B::Zalo, O::Ios, D::Mobile));
    let bare = classifier().classify(&Hit::default(), SITE);
    assert_eq!(
        [bare.utm_source, bare.utm_medium, bare.utm_campaign].map(|v| v.as_str().to_owned()),
        [NONE; 3]
    );
    assert_eq!(
        (bare.channel, bare.source),
        (Channel::Direct, Value::Known(DIRECT))
    );
}

#[test]
fn known_values_are_static_and_unknown_ones_borrowed_when_they_can_be() {
    let c = classifier();
    let hit = |referrer, page| Hit {
        page,
        referrer: Some(referrer),
        user_agent: CHROME_WIN.as_bytes(),
        hints: ClientHints::default(),
    };
    let d = c.classify(&hit("https://www.facebook.com/", "/a?utm_source=fb"), SITE);
    assert!(matches!(d.source, Value::Known("Facebook")));
    assert!(matches!(d.utm_source, Value::Borrowed("fb")));
    assert!(matches!(d.utm_campaign, Value::Known(NONE)));
    let d = c.classify(&hit("https://www.vnexpress.net/x", "/a"), SITE);
    assert!(matches!(d.source, Value::Borrowed("vnexpress.net")));
    let d = c.classify(&hit("https://WWW.VnExpress.net/x", "/a"), SITE);
    assert!(matches!(d.source, Value::Inline(_)));
    assert_eq!(d.source, "vnexpress.net");
}

#[test]
fn the_shipped_sources_build() {
    let c = Classifier::new().expect("sources.json builds");
    assert_eq!(c.sources.count(), 23);
}

/// Referrer-like text: a scheme, a host of host-ish and hostile bytes, a
/// port, a path with anything.
fn referrer_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        (
            prop_oneof![Just("https"), Just("http"), Just("android-app"), Just("x")],
            "[A-Za-z0-9._@:\\[\\]-]{0,90}",
            "[/?#\\\\][ -~]{0,40}|",
        )
            .prop_map(|(scheme, host, path)| format!("{scheme}://{host}{path}")),
        (0..REFERRERS.len(), "[ -~]{0,20}")
            .prop_map(|(i, tail)| format!("{}{tail}", REFERRERS[i].0.unwrap_or_default())),
    ]
}

fn agent_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..700),
        (
            0..AGENTS.len(),
            proptest::collection::vec(any::<u8>(), 0..20)
        )
            .prop_map(|(i, tail)| {
                let mut v = AGENTS[i].0.as_bytes().to_vec();
                v.extend(tail);
                v
            }),
    ]
}

/// What a stored value may be: known, or bounded request text.
fn bounded(v: &Value<'_>) -> bool {
    match v {
        Value::Known(_) => true,
        Value::Borrowed(s) => s.len() <= MAX_VALUE_BYTES,
        Value::Inline(i) => i.as_str().len() <= MAX_VALUE_BYTES,
    }
}

proptest! {
    #[test]
    fn any_input_classifies_without_panic_into_bounded_values(
        referrer in proptest::option::of(referrer_strategy()),
        page in prop_oneof![any::<String>(), "/[a-z]{0,5}\\?(utm_(source|medium|campaign)=[ -~]{0,120}&?){0,4}"],
        ua in agent_strategy(),
        brands in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
        mobile in proptest::option::of(prop_oneof![Just(b"?1".to_vec()), Just(b"?0".to_vec()), proptest::collection::vec(any::<u8>(), 0..4)]),
        platform in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
    ) {
        let hit = Hit {
            page: &page,
            referrer: referrer.as_deref(),
            user_agent: &ua,
            hints: ClientHints {
                ua: brands.as_deref(),
                mobile: mobile.as_deref(),
                platform: platform.as_deref(),
            },
        };
        let d = classifier().classify(&hit, SITE);
        for v in [d.source, d.utm_source, d.utm_medium, d.utm_campaign] {
            prop_assert!(bounded(&v), "{v:?}");
            prop_assert!(!v.as_str().is_empty());
        }
        for v in [d.utm_source, d.utm_medium, d.utm_campaign] {
            let s = v.as_str();
            prop_assert!(!s.chars().any(char::is_control), "{s:?}");
            prop_assert_eq!(s, s.trim());
        }
        // The cache answers what a parse answers.
        let bounded_ua = &ua[..ua.len().min(agent::MAX_UA_BYTES)];
        prop_assert_eq!(
            classifier().agent(&ua, hit.hints),
            agent::parse(bounded_ua, hit.hints.bounded())
        );
    }

    #[test]
    fn an_unknown_referrer_is_stored_as_a_host_only(
        referrer in referrer_strategy(),
    ) {
        let hit = Hit {
            page: "/a",
            referrer: Some(&referrer),
            user_agent: CHROME_WIN.as_bytes(),
            hints: ClientHints::default(),
        };
        let d = classifier().classify(&hit, SITE);
        if d.channel == Channel::Referral {
            let s = d.source.as_str();
            prop_assert!(!matches!(d.source, Value::Known(_)));
            prop_assert!(s.len() <= MAX_VALUE_BYTES, "{s}");
            let is_ipv6 = s.starts_with('[') && s.ends_with(']');
            prop_assert!(
                is_ipv6
                    || s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')),
                "{s:?} from {referrer:?}"
            );
            prop_assert!(!s.starts_with('.') && !s.ends_with('.') && !s.contains(".."), "{s:?}");
            // A suffix of the referrer's own host, never its path or query.
            let lower = referrer.to_ascii_lowercase();
            let authority = lower.split_once("://").map(|(_, r)| r).unwrap_or_default();
            let authority = authority.split(['/', '?', '#', '\\']).next().unwrap_or_default();
            prop_assert!(authority.contains(s), "{s:?} not in {authority:?}");
        } else {
            prop_assert!(matches!(d.source, Value::Known(_)), "{:?}", d.source);
        }
    }
}
