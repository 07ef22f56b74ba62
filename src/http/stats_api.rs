//! Stats API v1 (Plausible-compatible): `aggregate`, `timeseries`,
//! `breakdown` and `realtime/visitors`, behind
//! `Authorization: Bearer KEY`.

use actix_web::{HttpRequest, HttpResponse, web};

use super::{ApiError, AppState, query_context, settle_writes};
use crate::keys;
use crate::query::{self, Params, QueryError};
use crate::report::Reports;
use crate::store::{self, Store, sites::Site};

type Handler =
    fn(&dyn Reports, &Site, &Params, &query::Context) -> Result<serde_json::Value, QueryError>;

fn bearer(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

async fn answer(
    state: web::Data<AppState>,
    req: HttpRequest,
    params: web::Query<Params>,
    handler: Handler,
) -> Result<HttpResponse, ApiError> {
    let key = bearer(&req).ok_or(ApiError::Unauthorized)?;
    let store: Store = state.store.clone();
    let params = params.into_inner();
    settle_writes(&state).await;
    let value = web::block(move || -> Result<serde_json::Value, ApiError> {
        let site = {
            // Back to the pool before the report takes a reader.
            let conn = store.reader()?;
            if !store::sites::api_key_exists(&conn, &keys::hash(&key))? {
                return Err(ApiError::Unauthorized);
            }
            let domain = query::site_param(&params)?;
            store::sites::find_site(&conn, domain)?
                .ok_or_else(|| QueryError::NoSuchSite(domain.to_string()))?
        };
        let ctx = query_context(&site);
        Ok(handler(&*state.reports, &site, &params, &ctx)?)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(HttpResponse::Ok().json(value))
}

pub async fn aggregate(
    state: web::Data<AppState>,
    req: HttpRequest,
    params: web::Query<Params>,
) -> Result<HttpResponse, ApiError> {
    answer(state, req, params, query::aggregate).await
}

pub async fn timeseries(
    state: web::Data<AppState>,
    req: HttpRequest,
    params: web::Query<Params>,
) -> Result<HttpResponse, ApiError> {
    answer(state, req, params, query::timeseries).await
}

pub async fn realtime_visitors(
    state: web::Data<AppState>,
    req: HttpRequest,
    params: web::Query<Params>,
) -> Result<HttpResponse, ApiError> {
    answer(state, req, params, query::realtime_visitors).await
}

pub async fn breakdown(
    state: web::Data<AppState>,
    req: HttpRequest,
    params: web::Query<Params>,
) -> Result<HttpResponse, ApiError> {
    answer(state, req, params, query::breakdown).await
}
