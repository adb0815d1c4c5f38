//! The report page (`GET /report`): one HTML page, its script and style sheet, and the
//! vendored chart library (uPlot, see `shared/assets/report/VENDOR.md`), all compiled
//! into the binary so the page works without internet access and without a build step.
//!
//! [`asset`] maps a request path to the bytes, content type and cache policy; the caller
//! adds [`CONTENT_SECURITY_POLICY`] and the other security headers.
//!
//! Cache policy: the HTML is `no-cache` (always fetched, so a deploy is seen at once).
//! Every asset URL names its content: uPlot's files carry the pinned version in their
//! names, and the hand-written `report.js` / `report.css` are served under a name that
//! carries the first 16 hex digits of their SHA-256 (`report.<hash>.js`), which the HTML
//! is rewritten to reference. A changed file is therefore a new URL, and every asset is
//! `immutable` for a year. The unhashed names are not served (there would be no safe
//! cache lifetime for them).

use sha2::{Digest, Sha256};
use std::sync::LazyLock;

/// The page's path.
pub const PAGE_PATH: &str = "/report";
/// The prefix of the page's assets.
pub const ASSETS_PREFIX: &str = "/report/assets/";

/// The content security policy of the page and its assets: nothing from another origin,
/// no inline script or style (uPlot sets element styles through the CSSOM, which
/// `style-src` does not govern), no forms posted anywhere, never framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One servable file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asset {
    pub content_type: &'static str,
    pub body: &'static [u8],
    pub cache_control: &'static str,
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const NO_CACHE: &str = "no-cache";
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

const INDEX_HTML: &str = include_str!("../assets/report/index.html");
const REPORT_JS: &[u8] = include_bytes!("../assets/report/report.js");
const REPORT_CSS: &[u8] = include_bytes!("../assets/report/report.css");

/// The pinned chart library's version; its files' names carry it.
pub const UPLOT_VERSION: &str = "1.6.32";
const UPLOT_JS_NAME: &str = "uPlot-1.6.32.iife.min.js";
const UPLOT_CSS_NAME: &str = "uPlot-1.6.32.min.css";
const UPLOT_JS: &[u8] = include_bytes!("../assets/report/uPlot-1.6.32.iife.min.js");
const UPLOT_CSS: &[u8] = include_bytes!("../assets/report/uPlot-1.6.32.min.css");

/// The HTML with the hashed names of the hand-written assets, built once.
struct Page {
    html: String,
    js_name: String,
    css_name: String,
}

static PAGE: LazyLock<Page> = LazyLock::new(|| {
    let js_name = hashed_name("report", "js", REPORT_JS);
    let css_name = hashed_name("report", "css", REPORT_CSS);
    let html = INDEX_HTML
        .replace(
            "report/assets/report.js",
            &format!("report/assets/{js_name}"),
        )
        .replace(
            "report/assets/report.css",
            &format!("report/assets/{css_name}"),
        );
    Page {
        html,
        js_name,
        css_name,
    }
});

fn hashed_name(stem: &str, ext: &str, body: &[u8]) -> String {
    let digest = hex::encode(Sha256::digest(body));
    format!("{stem}.{}.{ext}", &digest[..16])
}

/// The file served at the request path `path` (no query string), or `None`. Only the
/// page and the exact asset names are known: anything else (other names, `..`, encoded
/// separators, a trailing slash) is `None`.
pub fn asset(path: &str) -> Option<Asset> {
    let page = &*PAGE;
    if path == PAGE_PATH {
        return Some(Asset {
            content_type: HTML,
            body: page.html.as_bytes(),
            cache_control: NO_CACHE,
        });
    }
    let name = path.strip_prefix(ASSETS_PREFIX)?;
    let (content_type, body) = if name == page.js_name {
        (JS, REPORT_JS)
    } else if name == page.css_name {
        (CSS, REPORT_CSS)
    } else if name == UPLOT_JS_NAME {
        (JS, UPLOT_JS)
    } else if name == UPLOT_CSS_NAME {
        (CSS, UPLOT_CSS)
    } else {
        return None;
    };
    Some(Asset {
        content_type,
        body,
        cache_control: IMMUTABLE,
    })
}

/// Every path [`asset`] serves: the page first, then its assets.
pub fn paths() -> Vec<String> {
    let page = &*PAGE;
    let mut out = vec![PAGE_PATH.to_string()];
    for name in [
        page.js_name.as_str(),
        page.css_name.as_str(),
        UPLOT_JS_NAME,
        UPLOT_CSS_NAME,
    ] {
        out.push(format!("{ASSETS_PREFIX}{name}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vendored files' SHA-256, as recorded in VENDOR.md: a changed library file
    /// fails here until it is re-vendored on purpose.
    const PINNED: [(&str, &[u8], &str); 3] = [
        (
            UPLOT_JS_NAME,
            UPLOT_JS,
            "19c8d4c6ad88929a79f4ae49d6f7161566dfd0ba3d15cc495e974f787eb78f1f",
        ),
        (
            UPLOT_CSS_NAME,
            UPLOT_CSS,
            "df630c6a8d6f8eeaff264b50f73ce5b114f646ffd9a0bb74f049b0a00135fa04",
        ),
        (
            "uPlot-LICENSE",
            include_bytes!("../assets/report/uPlot-LICENSE"),
            "8f989229699b4fe2f1a0432d0e9edc338a8a911e250e2d1b01ecd770a5f5b1bd",
        ),
    ];

    #[test]
    fn vendored_files_match_their_pinned_sha256() {
        let vendor_md = include_str!("../assets/report/VENDOR.md");
        for (name, body, pinned) in PINNED {
            assert_eq!(
                hex::encode(Sha256::digest(body)),
                pinned,
                "{name} changed: re-vendor it as VENDOR.md says and pin the new hash"
            );
            assert!(
                vendor_md.contains(pinned),
                "VENDOR.md does not record {name}'s sha256 {pinned}"
            );
        }
        assert!(vendor_md.contains(UPLOT_VERSION));
        let js = std::str::from_utf8(UPLOT_JS).expect("utf-8");
        assert!(
            js.starts_with(&format!(
                "/*! https://github.com/leeoniya/uPlot (v{UPLOT_VERSION})"
            )),
            "the vendored script is not uPlot {UPLOT_VERSION}"
        );
        let license = std::str::from_utf8(PINNED[2].1).expect("utf-8");
        assert!(license.starts_with("The MIT License (MIT)"));
    }

    #[test]
    fn every_path_resolves_with_its_content_type_and_cache_policy() {
        let paths = paths();
        assert_eq!(paths.len(), 5);
        let page = asset("/report").expect("the page");
        assert_eq!(page.content_type, "text/html; charset=utf-8");
        assert_eq!(page.cache_control, "no-cache");
        assert!(page.body.starts_with(b"<!doctype html>"));
        for path in &paths[1..] {
            let a = asset(path).unwrap_or_else(|| panic!("{path} resolves"));
            let expected = if path.ends_with(".js") {
                "text/javascript; charset=utf-8"
            } else {
                assert!(path.ends_with(".css"), "{path}");
                "text/css; charset=utf-8"
            };
            assert_eq!(a.content_type, expected, "{path}");
            assert_eq!(a.cache_control, IMMUTABLE, "{path}");
            assert!(!a.body.is_empty(), "{path}");
        }
        assert_eq!(
            asset(&format!("{ASSETS_PREFIX}{UPLOT_JS_NAME}")).map(|a| a.body),
            Some(UPLOT_JS)
        );
        assert_eq!(
            asset(&format!("{ASSETS_PREFIX}{}", PAGE.js_name)).map(|a| a.body),
            Some(REPORT_JS)
        );
        assert_eq!(
            asset(&format!("{ASSETS_PREFIX}{}", PAGE.css_name)).map(|a| a.body),
            Some(REPORT_CSS)
        );
    }

    #[test]
    fn immutable_assets_carry_their_content_in_their_names() {
        let js = asset(&format!("{ASSETS_PREFIX}{}", PAGE.js_name)).expect("js");
        let digest = hex::encode(Sha256::digest(js.body));
        assert_eq!(PAGE.js_name, format!("report.{}.js", &digest[..16]));
        let css = asset(&format!("{ASSETS_PREFIX}{}", PAGE.css_name)).expect("css");
        let digest = hex::encode(Sha256::digest(css.body));
        assert_eq!(PAGE.css_name, format!("report.{}.css", &digest[..16]));
        // The unhashed names are not served: they could not be cached for long.
        assert_eq!(asset("/report/assets/report.js"), None);
        assert_eq!(asset("/report/assets/report.css"), None);
    }

    #[test]
    fn the_html_references_exactly_the_served_assets_and_nothing_inline() {
        let html = std::str::from_utf8(asset("/report").expect("page").body).expect("utf-8");
        let mut referenced: Vec<String> = Vec::new();
        for attr in ["src=\"", "href=\""] {
            for part in html.split(attr).skip(1) {
                let url = part.split('"').next().expect("closing quote");
                referenced.push(url.to_string());
            }
        }
        referenced.sort();
        let mut served: Vec<String> = paths()[1..]
            .iter()
            .map(|p| p.trim_start_matches('/').to_string())
            .collect();
        served.sort();
        assert_eq!(
            referenced, served,
            "relative URLs, so a stage prefix keeps working"
        );
        let lower = html.to_ascii_lowercase();
        assert!(!lower.contains("<style"), "no inline style element");
        assert!(!lower.contains(" style="), "no inline style attribute");
        assert!(!lower.contains("javascript:"));
        assert_eq!(
            lower.matches("<script").count(),
            lower.matches("<script src=").count(),
            "every script is a file"
        );
        for handler in [
            " onclick=",
            " onload=",
            " onsubmit=",
            " onerror=",
            " onchange=",
        ] {
            assert!(!lower.contains(handler), "no inline handler {handler}");
        }
        assert!(!lower.contains("http://") && !lower.contains("https://"));
    }

    #[test]
    fn unknown_paths_and_traversal_are_none() {
        for path in [
            "",
            "/",
            "/report/",
            "/report/assets",
            "/report/assets/",
            "/REPORT",
            "/report?x=1",
            "/report/index.html",
            "/report/assets/index.html",
            "/report/assets/uPlot-LICENSE",
            "/report/assets/VENDOR.md",
            "/report/assets/../report_page.rs",
            "/report/assets/../../src/lib.rs",
            "/report/assets/./uPlot-1.6.32.min.css",
            "/report/assets//uPlot-1.6.32.min.css",
            "/report/assets/%2e%2e/report.js",
            "/report/assets/..%2freport.js",
            "/report/assets/uPlot-1.6.32.min.css/",
            "/report/assets/uPlot-1.6.32.min.css%00",
            "/report/assets/UPLOT-1.6.32.MIN.CSS",
            "/x/report/assets/uPlot-1.6.32.min.css",
            "/report/assetsuPlot-1.6.32.min.css",
            "/report/assets/report.0000000000000000.js",
        ] {
            assert_eq!(asset(path), None, "{path:?}");
        }
    }

    #[test]
    fn the_policy_is_strict() {
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "connect-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ] {
            assert!(CONTENT_SECURITY_POLICY.contains(directive), "{directive}");
        }
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
    }
}
