//! Who is looking at a page: the login session behind the cookie, the CSRF
//! token its forms carry, and the cookies that start and end a session.

use std::borrow::Cow;
use std::net::IpAddr;

use actix_web::HttpRequest;
use actix_web::cookie::{Cookie, SameSite, time::Duration as CookieDuration};

use super::super::client_ip;
use super::super::{AppState, PageError};
use crate::auth;
use crate::store::users::{self, LoginSession, User};
use crate::store::{self, Store};

/// The session cookie's name over plain http; see [`cookie_name`].
pub const SESSION_COOKIE: &str = "tally_session";
/// Signs forms shown before a session exists (sign-in, first-run setup).
pub const FORM_COOKIE: &str = "tally_form";
/// Marks a browser that signed in to an account: see `store::devices`.
/// One per browser, for the account it signed in to last.
pub const DEVICE_COOKIE: &str = "tally_device";
/// Sessions end after this long, however active; unused, they end sooner
/// (`[dashboard] session_idle_minutes`).
pub const SESSION_SECS: i64 = 30 * 86_400;

/// The name a cookie goes by: over https with the `__Host-` prefix, which
/// browsers accept only from a secure origin with `Secure`, `Path=/` and no
/// `Domain`, so a sibling subdomain or a network attacker on plain http
/// cannot plant or overwrite it. Over https only that name is read: a
/// plain-name cookie there may have been planted that way. Plain-http
/// deployments keep the plain names (browsers refuse the prefix there).
pub fn cookie_name(name: &'static str, https: bool) -> Cow<'static, str> {
    if https {
        Cow::Owned(format!("__Host-{name}"))
    } else {
        Cow::Borrowed(name)
    }
}

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

/// The session the request's cookie opens, if any and still open. A
/// session's expiry moves with use, at most once every few minutes, so
/// most requests only read.
pub async fn signed_in(state: &AppState, req: &HttpRequest) -> Result<Option<SignedIn>, PageError> {
    let name = cookie_name(SESSION_COOKIE, is_https(state, req));
    let Some(token) = req.cookie(&name).map(|c| c.value().to_string()) else {
        return Ok(None);
    };
    let store: Store = state.store.clone();
    let hash = auth::token_hash(&token);
    let idle = state.session_idle_secs;
    let now = store::now_unix();
    let found: Option<LoginSession> = super::blocking(move || {
        Ok(users::find_session(
            &*store.reader()?,
            &hash,
            now,
            idle,
            SESSION_SECS,
        )?)
    })
    .await?;
    let Some(s) = found else {
        return Ok(None);
    };
    let slid = (now + idle).min(s.created_at + SESSION_SECS);
    if slid - s.expires_at >= slide_every(idle) {
        let hash = auth::token_hash(&token);
        let touched = state
            .ingestor
            .writer()
            .run(move |tx| users::touch_session(tx, &hash, slid))
            .await;
        if let Err(e) = touched {
            // The session stays open until its current expiry.
            tracing::warn!(error = %e, "session expiry not moved");
        }
    }
    Ok(Some(SignedIn {
        user: s.user,
        csrf_token: s.csrf_token,
        token_hash: auth::token_hash(&token),
    }))
}

/// How far a session's expiry must have fallen behind before a request
/// moves it: a write every few minutes of use, not on every request, and a
/// small share of a short idle time.
fn slide_every(idle_secs: i64) -> i64 {
    (idle_secs / 10).clamp(1, 300)
}

/// When a session started at `now` ends unless used.
pub fn first_expiry(state: &AppState, now: i64) -> i64 {
    now + state.session_idle_secs.min(SESSION_SECS)
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

/// Longer `next` values are not followed (a dashboard view's URL is far
/// shorter), so checking one is bounded work.
const MAX_NEXT_BYTES: usize = 2048;

/// Only paths on this server are followed after sign-in, so a crafted link
/// cannot send a user elsewhere; anything else goes to `/`.
pub fn safe_next(next: Option<&str>) -> String {
    next.filter(|n| is_local_path(n))
        .map(str::to_string)
        .unwrap_or_else(|| "/".to_string())
}

/// Whether `next` names a path on this origin however a browser reads it.
/// Browsers drop tabs and line breaks from a `Location` and read `\` as `/`,
/// so `/\t/evil.example` becomes `//evil.example`, another host: any
/// whitespace, control character or backslash is refused, in the path also
/// once percent-decoded, as is a path starting with two slashes. What is
/// left must parse against a fixed base as a path of that origin and
/// serialise back unchanged (no dot segments that collapse into `//`, nothing
/// a browser would rewrite).
fn is_local_path(next: &str) -> bool {
    let unsafe_char = |c: char| c.is_whitespace() || c.is_control() || c == '\\';
    if next.len() > MAX_NEXT_BYTES || !next.starts_with('/') || next.chars().any(unsafe_char) {
        return false;
    }
    let path = next.split(['?', '#']).next().unwrap_or_default();
    let decoded = percent_decode(path);
    if decoded.starts_with("//") || decoded.chars().any(unsafe_char) {
        return false;
    }
    let Ok(base) = url::Url::parse("http://tally.invalid/") else {
        return false;
    };
    let Ok(joined) = base.join(next) else {
        return false;
    };
    let mut again = joined.path().to_string();
    if let Some(q) = joined.query() {
        again.push('?');
        again.push_str(q);
    }
    if let Some(f) = joined.fragment() {
        again.push('#');
        again.push_str(f);
    }
    joined.origin() == base.origin() && !again.starts_with("//") && again == next
}

/// `s` with its `%XX` sequences decoded, lossily: only for checking.
fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let pair = bytes
            .get(i + 1)
            .copied()
            .and_then(hex)
            .zip(bytes.get(i + 2).copied().and_then(hex));
        match (bytes[i], pair) {
            (b'%', Some((hi, lo))) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether the browser reached us over https: directly never (Tally speaks
/// plain HTTP), so only a trusted proxy's `X-Forwarded-Proto` tells.
pub fn is_https(state: &AppState, req: &HttpRequest) -> bool {
    client_ip::forwarded_https(req, &state.trusted_proxies)
}

/// The client address, for rate limiting only (held in memory, never stored).
pub fn client_addr(state: &AppState, req: &HttpRequest) -> Option<IpAddr> {
    client_ip::of_request(req, &state.trusted_proxies)
}

/// A cookie named for the scheme ([`cookie_name`]).
fn cookie(name: &'static str, value: String, secure: bool, max_age: i64) -> Cookie<'static> {
    Cookie::build(cookie_name(name, secure), value)
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

pub fn device_cookie(token: String, secure: bool) -> Cookie<'static> {
    cookie(DEVICE_COOKIE, token, secure, store::devices::DEVICE_SECS)
}

/// The device token the browser shows, if any.
pub fn device_token(state: &AppState, req: &HttpRequest) -> Option<String> {
    let name = cookie_name(DEVICE_COOKIE, is_https(state, req));
    req.cookie(&name).map(|c| c.value().to_string())
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
    let https = is_https(state, req);
    match req.cookie(&cookie_name(FORM_COOKIE, https)) {
        Some(c) if c.value().len() == 64 => Ok((c.value().to_string(), None)),
        _ => {
            let token = auth::random_token().map_err(|e| PageError::Internal(e.to_string()))?;
            let cookie = form_cookie(token.clone(), https);
            Ok((token, Some(cookie)))
        }
    }
}

/// Refuses a pre-session form whose token is not its cookie's
/// (double-submit: a foreign page can send the cookie but not read it).
pub fn check_form_token(
    state: &AppState,
    req: &HttpRequest,
    submitted: &str,
) -> Result<(), PageError> {
    match req.cookie(&cookie_name(FORM_COOKIE, is_https(state, req))) {
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
        for kept in [
            "/",
            "/example.com?period=7d",
            "/example.com/settings",
            "/example.com?filters=visit%3Asource%3D%3DGoogle&period=30d",
            "/share/example.com?auth=abc#top",
        ] {
            assert_eq!(safe_next(Some(kept)), kept);
        }
        for refused in [
            "//evil.example",
            "https://evil.example",
            "https:evil.example",
            "javascript:alert(1)",
            "evil.example",
            "",
            "/\\evil.example",
            "/\\/evil.example",
            "\\\\evil.example",
            // Browsers drop tabs and line breaks from URLs: `//evil.example`.
            "/\t/evil.example",
            "/\n/evil.example",
            "/\r/evil.example",
            "\t//evil.example",
            "/ /evil.example",
            "/\u{a0}/evil.example",
            "/\u{0}/evil.example",
            "/\u{7f}/evil.example",
            // The same written with percent signs.
            "/%09/evil.example",
            "/%0a/evil.example",
            "/%2F/evil.example",
            "/%2f%2fevil.example",
            "/%5C/evil.example",
            "/a&b=%09/x",
            "/%20/evil.example",
            // Dot segments that collapse into a second slash.
            "/..//evil.example",
            "/.//evil.example",
            "/a/../..//evil.example",
        ] {
            assert_eq!(safe_next(Some(refused)), "/", "{refused:?}");
        }
        assert_eq!(safe_next(Some(&format!("/{}", "a".repeat(5000)))), "/");
        assert_eq!(safe_next(None), "/");
    }
}
