//! Who is looking at a page: the login session behind the cookie, the CSRF
//! token its forms carry, and the cookies that start and end a session.

use std::net::IpAddr;

use actix_web::HttpRequest;
use actix_web::cookie::{Cookie, SameSite, time::Duration as CookieDuration};

use super::super::client_ip;
use super::super::{AppState, PageError};
use crate::auth;
use crate::store::users::{self, LoginSession, User};
use crate::store::{self, Store};

pub const SESSION_COOKIE: &str = "tally_session";
/// Signs forms shown before a session exists (sign-in, first-run setup).
pub const FORM_COOKIE: &str = "tally_form";
/// Sessions end after this long, however active.
pub const SESSION_SECS: i64 = 30 * 86_400;

/// A signed-in user, with the CSRF token of their session.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub user: User,
    pub csrf_token: String,
    token_hash: Vec<u8>,
}

impl SignedIn {
    pub fn token_hash(&self) -> &[u8] {
        &self.token_hash
    }

    /// Refuses a form whose `csrf` field is not this session's token.
    pub fn check_csrf(&self, submitted: &str) -> Result<(), PageError> {
        if auth::tokens_equal(submitted, &self.csrf_token) {
            Ok(())
        } else {
            Err(PageError::Forbidden(
                "the form has expired; reload the page and try again".into(),
            ))
        }
    }
}

/// The session the request's cookie opens, if any and not expired.
pub async fn signed_in(state: &AppState, req: &HttpRequest) -> Result<Option<SignedIn>, PageError> {
    let Some(token) = req.cookie(SESSION_COOKIE).map(|c| c.value().to_string()) else {
        return Ok(None);
    };
    let store: Store = state.store.clone();
    let hash = auth::token_hash(&token);
    let found: Option<LoginSession> = super::blocking(move || {
        Ok(users::find_session(
            &*store.reader()?,
            &hash,
            store::now_unix(),
        )?)
    })
    .await?;
    Ok(found.map(|s| SignedIn {
        user: s.user,
        csrf_token: s.csrf_token,
        token_hash: auth::token_hash(&token),
    }))
}

/// Like [`signed_in`], or a redirect to the sign-in page that returns here.
pub async fn require_user(state: &AppState, req: &HttpRequest) -> Result<SignedIn, PageError> {
    match signed_in(state, req).await? {
        Some(s) => Ok(s),
        None => Err(PageError::SignIn(return_path(req))),
    }
}

/// The path and query of this request, for returning after sign-in.
fn return_path(req: &HttpRequest) -> String {
    let uri = req.uri();
    uri.path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into())
}

/// Only local paths are followed after sign-in, so a crafted link cannot send
/// a user elsewhere.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_string(),
        _ => "/".to_string(),
    }
}

/// Whether the browser reached us over https: directly never (Tally speaks
/// plain HTTP), so only a trusted proxy's `X-Forwarded-Proto` tells.
pub fn is_https(state: &AppState, req: &HttpRequest) -> bool {
    client_ip::from_trusted_proxy(req, &state.trusted_proxies)
        && req
            .headers()
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// The client address, for rate limiting only (held in memory, never stored).
pub fn client_addr(state: &AppState, req: &HttpRequest) -> Option<IpAddr> {
    client_ip::of_request(req, &state.trusted_proxies)
}

fn cookie(name: &'static str, value: String, secure: bool, max_age: i64) -> Cookie<'static> {
    Cookie::build(name, value)
        .path("/")
        .http_only(true)
        .secure(secure)
        .same_site(SameSite::Lax)
        .max_age(CookieDuration::seconds(max_age))
        .finish()
}

pub fn session_cookie(token: String, secure: bool) -> Cookie<'static> {
    cookie(SESSION_COOKIE, token, secure, SESSION_SECS)
}

pub fn form_cookie(token: String, secure: bool) -> Cookie<'static> {
    cookie(FORM_COOKIE, token, secure, 3600)
}

pub fn expired(name: &'static str, secure: bool) -> Cookie<'static> {
    cookie(name, String::new(), secure, 0)
}

/// The token a pre-session form carries: its cookie's, or a new one with
/// the cookie to set.
pub fn form_token(
    state: &AppState,
    req: &HttpRequest,
) -> Result<(String, Option<Cookie<'static>>), PageError> {
    match req.cookie(FORM_COOKIE) {
        Some(c) if c.value().len() == 64 => Ok((c.value().to_string(), None)),
        _ => {
            let token = auth::random_token().map_err(|e| PageError::Internal(e.to_string()))?;
            let cookie = form_cookie(token.clone(), is_https(state, req));
            Ok((token, Some(cookie)))
        }
    }
}

/// Refuses a pre-session form whose token is not its cookie's
/// (double-submit: a foreign page can send the cookie but not read it).
pub fn check_form_token(req: &HttpRequest, submitted: &str) -> Result<(), PageError> {
    match req.cookie(FORM_COOKIE) {
        Some(c) if auth::tokens_equal(c.value(), submitted) => Ok(()),
        _ => Err(PageError::Forbidden(
            "the form has expired; reload the page and try again".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed() {
        assert_eq!(
            safe_next(Some("/example.com?period=7d")),
            "/example.com?period=7d"
        );
        assert_eq!(safe_next(Some("//evil.example")), "/");
        assert_eq!(safe_next(Some("https://evil.example")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        assert_eq!(safe_next(None), "/");
    }
}
