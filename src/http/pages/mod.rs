//! The dashboard's HTML side: sign-in, the site list, each site's dashboard
//! and settings, rendered on the server with askama (which escapes every
//! value; no template marks tracked data safe).

mod access;
mod chart;
mod dashboard;
mod details;
mod export;
mod login;
mod panels;
mod realtime;
pub mod session;
mod settings;
mod sites;
mod users;
mod view;

use actix_web::cookie::Cookie;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;

use super::PageError;
pub use realtime::LiveStreams;
use session::SignedIn;

/// The account corner of the top bar.
#[derive(Clone)]
pub struct Nav {
    pub email: String,
    pub csrf: String,
}

impl Nav {
    pub fn of(s: &SignedIn) -> Nav {
        Nav {
            email: s.user.email.clone(),
            csrf: s.csrf_token.clone(),
        }
    }
}

/// Registers the HTML routes; `/{domain}` comes last so fixed paths win.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/login", web::get().to(login::login_page))
        .route("/login", web::post().to(login::login))
        .route("/logout", web::post().to(login::logout))
        .route("/setup", web::get().to(login::setup_page))
        .route("/setup", web::post().to(login::setup))
        .route("/", web::get().to(sites::list))
        .route("/sites", web::post().to(sites::add))
        .route("/account/summary", web::post().to(sites::weekly_summary))
        // Site domains have a dot (`store::sites::new_domain`), so no site
        // can be called `users`.
        .route("/users", web::get().to(users::page))
        .route("/users", web::post().to(users::remove))
        .route("/share/{domain}", web::get().to(dashboard::site))
        .route("/share/{domain}/live", web::get().to(realtime::live))
        .route(
            "/share/{domain}/details/{tab}",
            web::get().to(details::details),
        )
        .route("/share/{domain}/export", web::get().to(export::export))
        .route("/{domain}/details/{tab}", web::get().to(details::details))
        .route("/{domain}/export", web::get().to(export::export))
        .route("/{domain}/live", web::get().to(realtime::live))
        .route("/{domain}/settings", web::get().to(settings::page))
        .route("/{domain}/settings", web::post().to(settings::update))
        .route("/{domain}", web::get().to(dashboard::site));
}

/// Every IANA timezone name, for a form's suggestions.
pub fn timezones() -> Vec<&'static str> {
    chrono_tz::TZ_VARIANTS.iter().map(|t| t.name()).collect()
}

/// A trimmed timezone name, or the message a form shows for it.
pub fn valid_timezone(tz: &str) -> Result<String, String> {
    let tz = tz.trim();
    match tz.parse::<chrono_tz::Tz>() {
        Ok(_) => Ok(tz.to_string()),
        Err(_) => Err(format!("{tz} is not a timezone like Europe/Berlin.")),
    }
}

/// Runs blocking store work off the async threads.
pub async fn blocking<T, F>(f: F) -> Result<T, PageError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, PageError> + Send + 'static,
{
    web::block(f)
        .await
        .map_err(|e| PageError::Internal(e.to_string()))?
}

pub fn html(page: &impl Template) -> Result<HttpResponse, PageError> {
    html_with_cookie(page, StatusCode::OK, None)
}

pub fn html_with_cookie(
    page: &impl Template,
    status: StatusCode,
    cookie: Option<Cookie<'static>>,
) -> Result<HttpResponse, PageError> {
    let body = page
        .render()
        .map_err(|e| PageError::Internal(e.to_string()))?;
    let mut resp = HttpResponse::build(status);
    resp.content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"));
    if let Some(c) = cookie {
        resp.cookie(c);
    }
    Ok(resp.body(body))
}

/// 303 See Other: after a form, the browser GETs `to`.
pub fn redirect(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header(("Location", to))
        .finish()
}
