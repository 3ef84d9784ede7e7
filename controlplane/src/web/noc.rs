//! The NOC page: live per-call stats in a browser, served by the management API at `GET /`.
//!
//! The page is one self-contained file, `noc.html`, compiled in: its style and script are
//! inline, it loads nothing from anywhere else, and it reads the same JSON API as everybody
//! (`/calls`, `/calls/<id>`, `/ended`, `/metrics`) once a second with `fetch`. It carries no
//! data of its own, so it is served without the API's token; the token, when the API has one,
//! is given to the page in the URL fragment (`/#token=...`, never sent to the server) and the
//! page sends it as `Authorization: Bearer` on its requests.
//!
//! The Content-Security-Policy allows exactly the page's inline script and style, by their
//! SHA-256 hashes computed once from the compiled-in file, and requests to this origin only:
//! markup that a call-id could smuggle into the page (the page never inserts any, see its
//! script) could neither run nor load anything.

use std::sync::LazyLock;

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

/// The page, as served.
pub const PAGE: &str = include_str!("noc.html");

/// Its media type.
pub const CONTENT_TYPE: &str = "text/html; charset=utf-8";

static POLICY: LazyLock<String> = LazyLock::new(|| content_security_policy(PAGE));

/// The headers the page is served with, beyond `Content-Type` (and the `Cache-Control:
/// no-store` every answer of the API has).
pub fn headers() -> Vec<(&'static str, String)> {
    vec![
        ("Content-Security-Policy", POLICY.clone()),
        ("X-Content-Type-Options", "nosniff".into()),
        ("Referrer-Policy", "no-referrer".into()),
        ("X-Frame-Options", "DENY".into()),
    ]
}

/// The text of each `<tag>...</tag>` element of `html` (the tag written without attributes,
/// as the page writes it), in order.
fn inline_elements<'a>(html: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut found = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find(&open) {
        let body = &rest[start + open.len()..];
        let Some(end) = body.find(&close) else {
            break;
        };
        found.push(&body[..end]);
        rest = &body[end + close.len()..];
    }
    found
}

/// `'sha256-<base64>'` sources for the inline `tag` elements of `html`, or `'none'`.
fn hash_sources(html: &str, tag: &str) -> String {
    let sources: Vec<String> = inline_elements(html, tag)
        .into_iter()
        .map(|text| {
            let digest = Sha256::digest(text.as_bytes());
            format!(
                "'sha256-{}'",
                base64::engine::general_purpose::STANDARD.encode(digest)
            )
        })
        .collect();
    if sources.is_empty() {
        "'none'".into()
    } else {
        sources.join(" ")
    }
}

/// The policy for `html`: nothing but its own inline script and style, requests to this
/// origin, and the empty `data:` favicon.
pub fn content_security_policy(html: &str) -> String {
    format!(
        "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src data:; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        hash_sources(html, "script"),
        hash_sources(html, "style"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_exactly_the_inline_script_and_style() {
        let scripts = inline_elements(PAGE, "script");
        let styles = inline_elements(PAGE, "style");
        assert_eq!((scripts.len(), styles.len()), (1, 1));
        assert!(scripts[0].contains("setTimeout(poll"), "the page's script");
        let policy = content_security_policy(PAGE);
        let digest = Sha256::digest(scripts[0].as_bytes());
        let expected = format!(
            "script-src 'sha256-{}';",
            base64::engine::general_purpose::STANDARD.encode(digest)
        );
        assert!(policy.contains(&expected), "{policy}");
        assert!(policy.starts_with("default-src 'none';"), "{policy}");
        assert!(!policy.contains("unsafe"), "{policy}");
        assert!(policy.contains("connect-src 'self';"), "{policy}");
        let served = headers();
        assert!(served.contains(&("Content-Security-Policy", policy)));
        assert!(served.contains(&("X-Content-Type-Options", "nosniff".into())));
    }

    #[test]
    fn known_hashes_and_odd_pages() {
        // The CSP3 spec's example: sha256 of `alert('Hello, world.');`.
        assert_eq!(
            hash_sources("<script>alert('Hello, world.');</script>", "script"),
            "'sha256-qznLcsROx4GACP2dm0UCKCzCG+HiZ1guq6ZZDob/Tng='"
        );
        assert_eq!(hash_sources("<p>no script</p>", "script"), "'none'");
        assert_eq!(hash_sources("<script>unterminated", "script"), "'none'");
        assert_eq!(
            inline_elements("<style>a</style><style></style>", "style"),
            vec!["a", ""]
        );
    }

    #[test]
    fn the_page_is_self_contained_and_never_inserts_markup() {
        for external in [
            "http://",
            "https://",
            "//cdn",
            "<script src",
            "<link rel=\"stylesheet",
        ] {
            assert!(!PAGE.contains(external), "the page refers to `{external}`");
        }
        let script = inline_elements(PAGE, "script").concat();
        // Data from the API (call-ids come from the network) goes in as text only.
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
            "setAttribute('on",
        ] {
            assert!(!script.contains(sink), "the script uses `{sink}`");
        }
        for endpoint in ["'/calls'", "'/calls/'", "'/ended?", "'/metrics'"] {
            assert!(script.contains(endpoint), "the script reads {endpoint}");
        }
        assert!(script.contains("'Bearer '"), "sends the token");
    }
}
