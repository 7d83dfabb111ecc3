//! The stylesheet, the script and the icon, embedded in the binary and
//! served under a name that carries their content hash, so a browser may
//! keep them for a year: a new build has new names.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

const CSS: &str = include_str!("static/app.css");
const JS: &str = include_str!("static/app.js");
const ICON: &str = include_str!("static/icon.svg");

struct Asset {
    name: String,
    body: &'static str,
    content_type: &'static str,
}

fn asset(stem: &str, ext: &str, body: &'static str, content_type: &'static str) -> Asset {
    let hash = hex::encode(&Sha256::digest(body.as_bytes())[..6]);
    Asset {
        name: format!("{stem}-{hash}.{ext}"),
        body,
        content_type,
    }
}

static ASSETS: LazyLock<[Asset; 3]> = LazyLock::new(|| {
    [
        asset("app", "css", CSS, "text/css; charset=utf-8"),
        asset("app", "js", JS, "text/javascript; charset=utf-8"),
        asset("icon", "svg", ICON, "image/svg+xml"),
    ]
});

fn url(i: usize) -> String {
    format!("/ui/assets/{}", ASSETS[i].name)
}

pub fn css_url() -> String {
    url(0)
}

pub fn js_url() -> String {
    url(1)
}

pub fn icon_url() -> String {
    url(2)
}

/// `GET /ui/assets/{name}`: an asset by its hashed name, cached for a year.
pub async fn serve(Path(name): Path<String>) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.name == name) else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    let mut response = asset.body.into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asset_names_carry_their_content_hash() {
        let css = css_url();
        let hash = hex::encode(&Sha256::digest(CSS.as_bytes())[..6]);
        assert_eq!(css, format!("/ui/assets/app-{hash}.css"));
        assert_ne!(css_url(), js_url());
    }
}
