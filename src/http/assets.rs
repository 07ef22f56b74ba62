//! Browser assets embedded in the binary: the tracker at `/js/script.js` and
//! the dashboard's stylesheet and script, compressed once (gzip, brotli) and
//! served with an ETag.

use std::io::Write;
use std::sync::OnceLock;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};

pub static TRACKER: &str = include_str!(concat!(env!("OUT_DIR"), "/script.js"));

/// Browsers revalidate daily (cheap, thanks to the ETag), so a new tracker
/// reaches every site within a day without versioned URLs.
const CACHE_CONTROL: &str = "public, max-age=86400, stale-while-revalidate=604800";

/// One asset in every encoding it is served in.
pub struct Encoded {
    pub identity: &'static [u8],
    pub gzip: Vec<u8>,
    pub brotli: Vec<u8>,
    pub etag: String,
}

impl Encoded {
    // Compressing into a `Vec` cannot fail: the writers fail only when their
    // sink does, and a `Vec` sink never does.
    #[allow(clippy::expect_used)]
    fn new(body: &'static [u8]) -> Encoded {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(body).expect("gzip to memory");
        let mut brotli = Vec::new();
        {
            let mut w = brotli::CompressorWriter::new(&mut brotli, 4096, 11, 22);
            w.write_all(body).expect("brotli to memory");
        }
        let hash = blake3::hash(body).to_hex();
        Encoded {
            identity: body,
            gzip: gz.finish().expect("gzip to memory"),
            brotli,
            etag: format!("\"{}\"", &hash[..16]),
        }
    }
}

pub fn tracker() -> &'static Encoded {
    static ENCODED: OnceLock<Encoded> = OnceLock::new();
    ENCODED.get_or_init(|| Encoded::new(TRACKER.as_bytes()))
}

static STYLESHEET: &str = include_str!("../../static/app.css");
static DASHBOARD_SCRIPT: &str = include_str!("../../static/app.js");

/// Dashboard assets are revalidated on every load (a 304 thanks to the
/// ETag), so an upgrade never pairs new pages with an old stylesheet.
const DASHBOARD_CACHE: &str = "no-cache";

/// Whether `accept` (an Accept-Encoding value) allows `coding` (q > 0).
fn accepts(accept: &str, coding: &str) -> bool {
    accept.split(',').any(|part| {
        let mut it = part.split(';');
        let name = it.next().unwrap_or("").trim();
        let zero_q = it.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q == 0.0)
        });
        name.eq_ignore_ascii_case(coding) && !zero_q
    })
}

pub async fn script(req: HttpRequest) -> HttpResponse {
    serve(
        &req,
        tracker(),
        "text/javascript; charset=utf-8",
        CACHE_CONTROL,
    )
}

pub async fn stylesheet(req: HttpRequest) -> HttpResponse {
    static ENCODED: OnceLock<Encoded> = OnceLock::new();
    let asset = ENCODED.get_or_init(|| Encoded::new(STYLESHEET.as_bytes()));
    serve(&req, asset, "text/css; charset=utf-8", DASHBOARD_CACHE)
}

pub async fn dashboard_script(req: HttpRequest) -> HttpResponse {
    static ENCODED: OnceLock<Encoded> = OnceLock::new();
    let asset = ENCODED.get_or_init(|| Encoded::new(DASHBOARD_SCRIPT.as_bytes()));
    serve(
        &req,
        asset,
        "text/javascript; charset=utf-8",
        DASHBOARD_CACHE,
    )
}

pub async fn no_favicon() -> HttpResponse {
    HttpResponse::NoContent()
        .insert_header((header::CACHE_CONTROL, "public, max-age=604800"))
        .finish()
}

/// Dashboards are for their users, not for search engines.
pub async fn robots() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body("User-agent: *\nDisallow: /\n")
}

fn serve(
    req: &HttpRequest,
    asset: &'static Encoded,
    content_type: &str,
    cache_control: &str,
) -> HttpResponse {
    let headers = req.headers();
    let mut resp = HttpResponse::Ok();
    resp.insert_header((header::CACHE_CONTROL, cache_control))
        .insert_header((header::ETAG, asset.etag.clone()))
        .insert_header((header::VARY, "Accept-Encoding"));
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim() == asset.etag || t.trim() == "*")
        });
    if matches {
        return resp
            .status(actix_web::http::StatusCode::NOT_MODIFIED)
            .finish();
    }
    resp.content_type(content_type);
    let accept = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accepts(accept, "br") {
        resp.insert_header((header::CONTENT_ENCODING, "br"))
            .body(asset.brotli.clone())
    } else if accepts(accept, "gzip") {
        resp.insert_header((header::CONTENT_ENCODING, "gzip"))
            .body(asset.gzip.clone())
    } else {
        resp.body(asset.identity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_encoding() {
        assert!(accepts("gzip, deflate, br", "br"));
        assert!(!accepts("gzip, br;q=0", "br"));
        assert!(accepts("gzip;q=0.5", "gzip"));
        assert!(!accepts("identity", "gzip"));
    }

    #[test]
    fn tracker_is_small_and_comment_free() {
        let t = tracker();
        assert!(!TRACKER.contains("\n//"), "comments are stripped");
        assert!(
            t.gzip.len() < 1500,
            "tracker is {} bytes gzipped",
            t.gzip.len()
        );
        let mut unzipped = String::new();
        std::io::Read::read_to_string(
            &mut flate2::read::GzDecoder::new(&t.gzip[..]),
            &mut unzipped,
        )
        .unwrap();
        assert_eq!(unzipped, TRACKER);
    }
}
