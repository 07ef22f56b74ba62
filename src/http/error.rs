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
            },
            ApiError::Query(e) => match e {
                QueryError::BadParam(_) => StatusCode::BAD_REQUEST,
                QueryError::NoSuchSite(_) => StatusCode::NOT_FOUND,
                QueryError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
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
            && !matches!(self, ApiError::Ingest(IngestError::Overloaded))
        {
            "internal error".to_string()
        } else {
            self.to_string()
        };
        match self {
            ApiError::Ingest(e) => {
                if matches!(e, IngestError::Overloaded) {
                    resp.insert_header(("Retry-After", "1"));
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
