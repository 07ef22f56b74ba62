//! The one place where errors become HTTP status codes and bodies.
//!
//! The tracking endpoint answers `{"errors":{"field":["why"]}}`; the Stats API
//! answers `{"error":"why"}`, as Plausible's do.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use crate::ingest::IngestError;
use crate::query::QueryError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error("a valid API key is required (Authorization: Bearer KEY)")]
    Unauthorized,
    #[error("request body not received in time")]
    BodyTimeout,
    #[error("internal error")]
    Internal(String),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl ApiError {
    /// A refused tracking request's reason in metrics: one of
    /// [`crate::ingest::REJECT_REASONS`].
    pub fn reject_reason(&self) -> &'static str {
        match self {
            ApiError::Ingest(e) => match e {
                IngestError::Invalid { .. } => "invalid",
                IngestError::UnsupportedMediaType(_) => "unsupported_media_type",
                IngestError::TooLarge { .. } => "too_large",
                IngestError::UnknownSite(_) => "unknown_site",
                IngestError::Overloaded => "overloaded",
                IngestError::Storage(_) | IngestError::Unavailable => "storage",
            },
            ApiError::BodyTimeout => "body_timeout",
            ApiError::Query(_) | ApiError::Unauthorized | ApiError::Internal(_) => "storage",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Ingest(e) => match e {
                IngestError::Invalid { .. } => StatusCode::BAD_REQUEST,
                IngestError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                IngestError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                IngestError::UnknownSite(_) => StatusCode::NOT_FOUND,
                IngestError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
                IngestError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
                IngestError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            },
            ApiError::Query(e) => match e {
                QueryError::BadParam(_) => StatusCode::BAD_REQUEST,
                QueryError::NoSuchSite(_) => StatusCode::NOT_FOUND,
                QueryError::Report(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let mut resp = HttpResponse::build(status);
        let public = if status.is_server_error()
            && !matches!(
                self,
                ApiError::Ingest(IngestError::Overloaded | IngestError::Unavailable)
            ) {
            "internal error".to_string()
        } else {
            self.to_string()
        };
        match self {
            ApiError::Ingest(e) => {
                match e {
                    IngestError::Overloaded => {
                        resp.insert_header(("Retry-After", "1"));
                    }
                    // Until someone restarts the server.
                    IngestError::Unavailable => {
                        resp.insert_header(("Retry-After", "60"));
                    }
                    _ => {}
                }
                resp.insert_header(("Access-Control-Allow-Origin", "*"));
                let (field, reason) = match e {
                    IngestError::Invalid { field, reason } => (*field, reason.clone()),
                    IngestError::UnsupportedMediaType(_) => ("content_type", public),
                    IngestError::TooLarge { .. } => ("body", public),
                    IngestError::UnknownSite(_) => ("domain", public),
                    _ => ("event", public),
                };
                resp.json(json!({ "errors": { field: [reason] } }))
            }
            ApiError::BodyTimeout => resp.json(json!({ "errors": { "body": [public] } })),
            _ => resp.json(json!({ "error": public })),
        }
    }
}

/// Errors of the HTML pages: shown as a page, never as JSON.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// Not signed in: the sign-in page, then back to this path.
    #[error("sign in to continue")]
    SignIn(String),
    /// No such page, or one the viewer may not see (the same answer, so a
    /// stranger cannot tell which domains exist).
    #[error("page not found")]
    NotFound,
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("too many attempts; wait a few minutes and try again")]
    TooManyRequests,
    #[error("internal error")]
    Internal(String),
    /// This client is at a cap of its own (what, and seconds to wait).
    #[error("{0}; try again later")]
    Throttled(&'static str, u32),
    /// The server is at its cap of such work at once (what, and seconds to
    /// wait).
    #[error("{0}; try again shortly")]
    Busy(&'static str, u32),
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        PageError::Internal(e.to_string())
    }
}

impl From<crate::store::WriteError> for PageError {
    fn from(e: crate::store::WriteError) -> Self {
        PageError::Internal(e.to_string())
    }
}

impl From<QueryError> for PageError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::BadParam(m) => PageError::BadRequest(m),
            QueryError::NoSuchSite(_) => PageError::NotFound,
            QueryError::Report(e) => PageError::Internal(e.to_string()),
        }
    }
}

#[derive(askama::Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    message: &'a str,
}

impl ResponseError for PageError {
    fn status_code(&self) -> StatusCode {
        match self {
            PageError::SignIn(_) => StatusCode::SEE_OTHER,
            PageError::NotFound => StatusCode::NOT_FOUND,
            PageError::BadRequest(_) => StatusCode::BAD_REQUEST,
            PageError::Forbidden(_) => StatusCode::FORBIDDEN,
            PageError::TooManyRequests | PageError::Throttled(..) => StatusCode::TOO_MANY_REQUESTS,
            PageError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            PageError::Busy(..) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        use askama::Template;
        let status = self.status_code();
        if let PageError::SignIn(next) = self {
            let target = format!(
                "/login?{}",
                url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("next", next)
                    .finish()
            );
            return HttpResponse::SeeOther()
                .insert_header(("Location", target))
                .finish();
        }
        if status.is_server_error() && !matches!(self, PageError::Busy(..)) {
            tracing::error!(error = ?self, "page failed");
        }
        let message = self.to_string();
        let page = ErrorPage {
            status: status.as_u16(),
            message: &message,
        };
        let mut resp = HttpResponse::build(status);
        match self {
            PageError::TooManyRequests => {
                resp.insert_header(("Retry-After", "900"));
            }
            PageError::Throttled(_, secs) | PageError::Busy(_, secs) => {
                resp.insert_header(("Retry-After", secs.to_string()));
            }
            _ => {}
        }
        resp.content_type("text/html; charset=utf-8")
            .body(page.render().unwrap_or(message))
    }
}
