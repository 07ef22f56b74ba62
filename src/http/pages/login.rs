//! `/login`, `/logout` and the first-run `/setup` page.

use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::session::{self, form_token};
use super::{blocking, html_with_cookie, redirect};
use crate::auth::{self, limiter::Device};
use crate::http::{AppState, PageError};
use crate::store::{self, Store, devices, users};

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    csrf: String,
    next: String,
    email: String,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "setup.html")]
struct SetupPage {
    csrf: String,
    email: String,
    error: Option<String>,
    min_password: usize,
}

#[derive(Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

async fn user_count(store: &Store) -> Result<i64, PageError> {
    let store = store.clone();
    blocking(move || Ok(users::count_users(&*store.reader()?)?)).await
}

pub async fn login_page(
    state: web::Data<AppState>,
    req: HttpRequest,
    q: web::Query<NextQuery>,
) -> Result<HttpResponse, PageError> {
    if user_count(&state.store).await? == 0 {
        return Ok(redirect("/setup"));
    }
    let next = session::safe_next(q.next.as_deref());
    if session::signed_in(&state, &req).await?.is_some() {
        return Ok(redirect(&next));
    }
    let (csrf, cookie) = form_token(&state, &req)?;
    let page = LoginPage {
        csrf,
        next,
        email: String::new(),
        error: None,
    };
    html_with_cookie(&page, actix_web::http::StatusCode::OK, cookie)
}

#[derive(Deserialize)]
pub struct LoginForm {
    csrf: String,
    email: String,
    password: String,
    next: Option<String>,
}

pub async fn login(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: web::Form<LoginForm>,
) -> Result<HttpResponse, PageError> {
    let form = form.into_inner();
    session::check_form_token(&state, &req, &form.csrf)?;
    let ip = session::client_addr(&state, &req);
    let email = form.email.trim().to_string();
    if email.len() > auth::MAX_EMAIL_BYTES {
        return Err(PageError::BadRequest(format!(
            "email: at most {} characters",
            auth::MAX_EMAIL_BYTES
        )));
    }
    let (db, e) = (state.store.clone(), email.clone());
    let now = store::now_unix();
    let shown = session::device_token(&state, &req);
    let shown_hash = shown.as_deref().map(auth::token_hash);
    let (found, device) = blocking(move || {
        let conn = db.reader()?;
        let found = users::find_user(&conn, &e)?;
        // A device token counts only for the account it was given for.
        let device = match (&found, shown_hash) {
            (Some((user, _)), Some(hash)) => devices::device_user(&conn, &hash, now)?
                .filter(|id| *id == user.id)
                .map(|_| hash),
            _ => None,
        };
        Ok((found, device))
    })
    .await?;
    let device_key: Option<Device> = device.as_deref().and_then(|h| h.get(..16)?.try_into().ok());
    // Counted before the password is checked, so parallel requests cannot
    // check more than the limits allow. An email without an account is
    // counted apart, so that made-up emails cannot fill the limiter.
    let begun = match (&found, device_key) {
        (Some(_), Some(key)) => state.login_limiter.begin_device(ip, &email, key, now),
        (Some(_), None) => state.login_limiter.begin(ip, &email, now),
        (None, _) => state.login_limiter.begin_stranger(ip, &email, now),
    };
    let attempt = match begun {
        Ok(a) => a,
        Err(refusal) => {
            tracing::warn!(?refusal, "sign-in refused: too many attempts");
            return Err(PageError::TooManyRequests);
        }
    };
    let password = form.password;
    let slot = match password_slot(&state.password_checks).await {
        Ok(slot) => slot,
        Err(e) => {
            state.login_limiter.not_checked(attempt);
            return Err(e);
        }
    };
    let user = with_slot(slot, move || {
        // An unknown email costs as much as a wrong password.
        let phc = found
            .as_ref()
            .map(|(_, h)| h.as_str())
            .unwrap_or(auth::decoy_hash());
        let ok = auth::verify_password(&password, phc);
        Ok(found.filter(|_| ok).map(|(u, _)| u))
    })
    .await?;
    let Some(user) = user else {
        state.login_limiter.failed(attempt);
        let page = LoginPage {
            csrf: form.csrf,
            next: session::safe_next(form.next.as_deref()),
            email,
            error: Some("Wrong email or password.".into()),
        };
        return html_with_cookie(&page, actix_web::http::StatusCode::UNAUTHORIZED, None);
    };
    state.login_limiter.succeeded(attempt, now);
    let known_device = shown.filter(|_| device.is_some());
    start_session(
        &state,
        &req,
        user.id,
        known_device,
        &session::safe_next(form.next.as_deref()),
    )
    .await
}

/// Waits for a password-hashing slot; after 10 s in line, the client is
/// told to come back later.
async fn password_slot(slots: &Arc<Semaphore>) -> Result<OwnedSemaphorePermit, PageError> {
    match tokio::time::timeout(
        std::time::Duration::from_secs(10),
        slots.clone().acquire_owned(),
    )
    .await
    {
        Ok(Ok(permit)) => Ok(permit),
        _ => Err(PageError::TooManyRequests),
    }
}

/// Runs `check` (a password hash) on a blocking thread in `slot`. The slot
/// goes to that thread and is freed when the hash ends: a client hanging
/// up drops the handler's future, but not the hash already running, and a
/// slot freed with the future would let more hashes run at once than
/// [`auth::CONCURRENT_PASSWORD_CHECKS`].
async fn with_slot<T, F>(slot: OwnedSemaphorePermit, check: F) -> Result<T, PageError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, PageError> + Send + 'static,
{
    blocking(move || {
        let result = check();
        drop(slot);
        result
    })
    .await
}

/// Stores a new session for `user_id` and answers with its cookie, the
/// browser's device token (`device`, the valid one it showed, kept for
/// another [`devices::DEVICE_SECS`], or a new one) and a redirect to `next`.
async fn start_session(
    state: &AppState,
    req: &HttpRequest,
    user_id: i64,
    device: Option<String>,
    next: &str,
) -> Result<HttpResponse, PageError> {
    let new_token = || auth::random_token().map_err(|e| PageError::Internal(e.to_string()));
    let token = new_token()?;
    let csrf = new_token()?;
    let hash = auth::token_hash(&token);
    let (device, device_is_new) = match device {
        Some(d) => (d, false),
        None => (new_token()?, true),
    };
    let device_hash = auth::token_hash(&device);
    let now = store::now_unix();
    let expires_at = session::first_expiry(state, now);
    state
        .ingestor
        .writer()
        .run(move |tx| {
            users::delete_expired_sessions(tx, now)?;
            if device_is_new {
                devices::add_device(tx, &device_hash, user_id, now)?;
            } else {
                devices::touch_device(tx, &device_hash, now)?;
            }
            users::create_session(tx, &hash, user_id, &csrf, now, expires_at)
        })
        .await?;
    let secure = session::is_https(state, req);
    Ok(HttpResponse::SeeOther()
        .insert_header(("Location", next))
        .cookie(session::session_cookie(token, secure))
        .cookie(session::device_cookie(device, secure))
        .cookie(session::expired(session::FORM_COOKIE, secure))
        .finish())
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

pub async fn logout(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, PageError> {
    let secure = session::is_https(&state, &req);
    if let Some(s) = session::signed_in(&state, &req).await? {
        s.check_csrf(&form.csrf)?;
        let hash = s.token_hash().to_vec();
        state
            .ingestor
            .writer()
            .run(move |tx| users::delete_session(tx, &hash))
            .await?;
    }
    Ok(HttpResponse::SeeOther()
        .insert_header(("Location", "/login"))
        .cookie(session::expired(session::SESSION_COOKIE, secure))
        .finish())
}

pub async fn setup_page(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, PageError> {
    if user_count(&state.store).await? > 0 {
        return Err(PageError::NotFound);
    }
    let (csrf, cookie) = form_token(&state, &req)?;
    let page = SetupPage {
        csrf,
        email: String::new(),
        error: None,
        min_password: auth::MIN_PASSWORD_CHARS,
    };
    html_with_cookie(&page, actix_web::http::StatusCode::OK, cookie)
}

#[derive(Deserialize)]
pub struct SetupForm {
    csrf: String,
    token: String,
    email: String,
    password: String,
}

pub async fn setup(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: web::Form<SetupForm>,
) -> Result<HttpResponse, PageError> {
    let form = form.into_inner();
    session::check_form_token(&state, &req, &form.csrf)?;
    if user_count(&state.store).await? > 0 {
        return Err(PageError::NotFound);
    }
    let ip = session::client_addr(&state, &req);
    let now = store::now_unix();
    // The setup token is limited like a password of an account "setup".
    let Ok(attempt) = state.login_limiter.begin(ip, "setup", now) else {
        return Err(PageError::TooManyRequests);
    };
    let retry = |error: String| {
        let page = SetupPage {
            csrf: form.csrf.clone(),
            email: form.email.clone(),
            error: Some(error),
            min_password: auth::MIN_PASSWORD_CHARS,
        };
        html_with_cookie(&page, actix_web::http::StatusCode::BAD_REQUEST, None)
    };
    let token_ok = state
        .setup_token
        .as_deref()
        .is_some_and(|t| auth::tokens_equal(t, form.token.trim()));
    if !token_ok {
        state.login_limiter.failed(attempt);
        return retry("That is not the setup token printed in the server log.".into());
    }
    state.login_limiter.succeeded(attempt, now);
    let Some(email) = auth::valid_email(&form.email) else {
        return retry("Enter an email address.".into());
    };
    let password = form.password.clone();
    let slot = password_slot(&state.password_checks).await?;
    let hash = match with_slot(slot, move || Ok(auth::hash_password(&password))).await? {
        Ok(h) => h,
        Err(e) => return retry(format!("{e}.")),
    };
    let user = state
        .ingestor
        .writer()
        .run_for(move |tx| {
            // Checked again inside the write: two racing setups make one user.
            if users::count_users(tx)? > 0 {
                return Ok(None);
            }
            Ok(Some(users::add_user(tx, &email, &hash, true, now)?))
        })
        .await?
        .ok_or(PageError::NotFound)?;
    tracing::info!("first dashboard user created");
    start_session(&state, &req, user.id, None, "/").await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[actix_web::test]
    async fn a_slot_stays_taken_until_its_hash_ends_when_the_client_leaves() {
        let slots = Arc::new(Semaphore::new(1));
        let slot = password_slot(&slots).await.unwrap();
        let (started, has_started) = mpsc::channel();
        let (end, ends) = mpsc::channel::<()>();
        let check = actix_web::rt::spawn(with_slot(slot, move || {
            started.send(()).unwrap();
            ends.recv().unwrap();
            Ok(())
        }));
        web::block(move || has_started.recv())
            .await
            .unwrap()
            .unwrap();
        // The client hangs up: actix drops the handler's future.
        check.abort();
        assert!(check.await.unwrap_err().is_cancelled());
        assert_eq!(slots.available_permits(), 0, "the hash still runs");
        end.send(()).unwrap();
        let back = tokio::time::timeout(Duration::from_secs(60), slots.acquire());
        assert!(back.await.is_ok(), "the slot comes back when the hash ends");
    }
}
