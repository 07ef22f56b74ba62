//! `POST /api/event` (Plausible's Events API), its CORS preflight, and
//! `GET /api/event`, the no-JS pixel.

use std::time::Duration;

use actix_web::http::header::{self, HeaderMap};
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;

use super::{ApiError, AppState, client_ip};
use crate::ingest::payload::{self, MAX_BODY_BYTES};
use crate::ingest::{DropReason, EventPayload, IngestError, Outcome, RequestMeta};
use crate::store::now_unix;

/// A client gets this long to send its body; trickled bytes time out.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// 1×1 transparent GIF.
const PIXEL: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn read_body(req: &HttpRequest, mut body: web::Payload) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::Ingest(IngestError::TooLarge {
            limit: MAX_BODY_BYTES,
        })
    };
    let declared = header(req.headers(), "content-length").and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let read = async {
        let mut buf =
            Vec::with_capacity(declared.unwrap_or(512).min(MAX_BODY_BYTES as u64) as usize);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::Ingest(IngestError::invalid(
                    "body",
                    format!("could not be read ({e})"),
                ))
            })?;
            if buf.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(too_large());
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf)
    };
    tokio::time::timeout(BODY_TIMEOUT, read)
        .await
        .map_err(|_| ApiError::BodyTimeout)?
}

async fn ingest(
    state: &AppState,
    req: &HttpRequest,
    payload: EventPayload,
) -> Result<Outcome, ApiError> {
    let headers = req.headers();
    let meta = RequestMeta {
        ip: client_ip::of_request(req, &state.trusted_proxies)
            .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1])),
        user_agent: header(headers, "user-agent").unwrap_or(""),
        opted_out: header(headers, "sec-gpc") == Some("1") || header(headers, "dnt") == Some("1"),
        now: now_unix(),
    };
    Ok(state.ingestor.ingest(payload, meta).await?)
}

fn with_outcome(
    mut resp: actix_web::HttpResponseBuilder,
    outcome: Outcome,
) -> actix_web::HttpResponseBuilder {
    if let Outcome::Dropped(reason) = outcome {
        resp.insert_header(("x-tally-dropped", "1"));
        if let DropReason::Bot(bot) = reason {
            resp.insert_header(("x-tally-drop-reason", bot.label()));
        }
    }
    resp
}

pub async fn post(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let result = async {
        let content_type = header(req.headers(), "content-type").unwrap_or("");
        let mime = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if !matches!(mime.as_str(), "application/json" | "text/plain" | "") {
            return Err(ApiError::Ingest(IngestError::UnsupportedMediaType(mime)));
        }
        let body = read_body(&req, body).await?;
        let payload = payload::parse_body(&body)?;
        ingest(&state, &req, payload).await
    }
    .await;
    let outcome = result.inspect_err(|e| state.ingestor.count_rejected(e.reject_reason()))?;
    Ok(with_outcome(HttpResponse::Accepted(), outcome)
        .insert_header(("Access-Control-Allow-Origin", "*"))
        .content_type("text/plain; charset=utf-8")
        .body("ok"))
}

pub async fn preflight() -> HttpResponse {
    HttpResponse::NoContent()
        .insert_header(("Access-Control-Allow-Origin", "*"))
        .insert_header(("Access-Control-Allow-Methods", "POST, GET, OPTIONS"))
        .insert_header(("Access-Control-Allow-Headers", "Content-Type"))
        .insert_header(("Access-Control-Max-Age", "86400"))
        .finish()
}

pub async fn pixel(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let referer = header(req.headers(), "referer");
    let result = match payload::parse_query(req.query_string(), referer) {
        Ok(payload) => ingest(&state, &req, payload).await,
        Err(e) => Err(e.into()),
    };
    let outcome = result.inspect_err(|e| state.ingestor.count_rejected(e.reject_reason()))?;
    Ok(with_outcome(HttpResponse::Ok(), outcome)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .content_type("image/gif")
        .body(PIXEL))
}
