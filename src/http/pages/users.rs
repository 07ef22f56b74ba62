//! `/users`, for admins: every user with their sites and roles, and
//! removing a user (with their memberships and login sessions). Users are
//! added on the command line, where the password is typed.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use super::access::{Access, Action};
use super::session::{self, SignedIn};
use super::{Nav, blocking, html_with_cookie, redirect};
use crate::auth;
use crate::http::{AppState, PageError};
use crate::store::StoreError;
use crate::store::users::{self, UserRemoval};

pub struct UserRow {
    pub email: String,
    pub admin: bool,
    /// "domain (role)" of each membership.
    pub sites: Vec<String>,
    /// The only admin: shown without a remove button, since the server
    /// refuses it anyway.
    pub last_admin: bool,
    pub me: bool,
}

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    signed_in: Option<Nav>,
    csrf: String,
    users: Vec<UserRow>,
    notice: Option<String>,
    error: Option<String>,
}

/// The signed-in admin, or why not: a sign-in without a session, a 403
/// for everyone else.
async fn admin(state: &AppState, req: &HttpRequest) -> Result<SignedIn, PageError> {
    let me = session::require_user(state, req).await?;
    Access::server(&me.user).require(Action::ManageUsers)?;
    Ok(me)
}

pub async fn page(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, PageError> {
    let me = admin(&state, &req).await?;
    render(&state, &me, StatusCode::OK, None, None).await
}

async fn render(
    state: &AppState,
    me: &SignedIn,
    status: StatusCode,
    notice: Option<String>,
    error: Option<String>,
) -> Result<HttpResponse, PageError> {
    let store = state.store.clone();
    let all = blocking(move || Ok(users::users_with_sites(&*store.reader()?)?)).await?;
    let admins = all.iter().filter(|u| u.admin).count();
    let users = all
        .into_iter()
        .map(|u| UserRow {
            me: u.email == me.user.email,
            last_admin: u.admin && admins <= 1,
            sites: u
                .sites
                .iter()
                .map(|(domain, role)| format!("{domain} ({role})"))
                .collect(),
            email: u.email,
            admin: u.admin,
        })
        .collect();
    let page = UsersPage {
        signed_in: Some(Nav::of(me)),
        csrf: me.csrf_token.clone(),
        users,
        notice,
        error,
    };
    html_with_cookie(&page, status, None)
}

#[derive(Deserialize)]
pub struct RemoveForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    email: String,
}

/// `POST /users`: removes the user named by `email`. The last admin stays
/// (409); an admin may remove themselves while another admin remains, and
/// is signed out by it, since their sessions go with them.
pub async fn remove(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: web::Form<RemoveForm>,
) -> Result<HttpResponse, PageError> {
    let me = admin(&state, &req).await?;
    me.check_csrf(&form.csrf)?;
    let Some(email) = auth::valid_email(&form.email) else {
        let message = format!("email: {:?} is not an e-mail address.", form.email.trim());
        return render(&state, &me, StatusCode::BAD_REQUEST, None, Some(message)).await;
    };
    let e = email.clone();
    // None: no such user (perhaps removed a moment ago by another admin).
    let removal = state
        .ingestor
        .writer()
        .run_for(move |tx| match users::remove_user_within(tx, &e) {
            Err(StoreError::NoSuchUser(_)) => Ok(None),
            other => other.map(Some),
        })
        .await?;
    let refused = |status, message| render(&state, &me, status, None, Some(message));
    match removal {
        None => {
            refused(
                StatusCode::NOT_FOUND,
                format!("email: there is no user {email}."),
            )
            .await
        }
        Some(UserRemoval::LastAdmin) => {
            let message = format!(
                "{email} is the last admin and stays: add another admin first (`tally user add`)."
            );
            refused(StatusCode::CONFLICT, message).await
        }
        Some(UserRemoval::Removed { ownerless }) => {
            tracing::info!(%email, "user removed from the dashboard");
            if email.eq_ignore_ascii_case(&me.user.email) {
                // Their session went with them: the site list asks to sign in.
                return Ok(redirect("/"));
            }
            let mut notice = format!("Removed {email} with their memberships and sessions.");
            if !ownerless.is_empty() {
                notice.push_str(&format!(
                    " Sites now without an owner (admins manage them): {}.",
                    ownerless.join(", ")
                ));
            }
            render(&state, &me, StatusCode::OK, Some(notice), None).await
        }
    }
}
