//! `/{domain}/settings`: the tracking snippet, timezone, public toggle,
//! share links, goals, excluded traffic, members and removing the site.
//! Every change is a POST with the session's CSRF token, and needs the
//! rights `access::Access` gives the user's role for its action.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use super::access::{self, Access, Action};
use super::session::{self, SignedIn};
use super::{Nav, blocking, html_with_cookie, redirect};
use crate::http::{AppState, PageError};
use crate::ingest::sites::Exclusions;
use crate::store::sites::{self, GoalKind, Site};
use crate::store::users::{self, MemberChange, Role};
use crate::{auth, keys, store};

pub struct ShareRow {
    pub id: i64,
    pub name: String,
    /// The full link right after creation; afterwards its hint only.
    pub url: String,
}

pub struct MemberRow {
    pub id: i64,
    pub email: String,
    pub role: &'static str,
    /// Each role, and whether it is this member's (for the role menu).
    pub options: Vec<(&'static str, bool)>,
}

#[derive(Template)]
#[template(path = "settings.html")]
struct SettingsPage {
    signed_in: Option<Nav>,
    csrf: String,
    domain: String,
    snippet: String,
    timezone: String,
    public: bool,
    shares: Vec<ShareRow>,
    /// A share link just created, shown whole this once.
    new_share: Option<ShareRow>,
    goals: Vec<(i64, String)>,
    excluded_ips: String,
    excluded_paths: String,
    members: Vec<MemberRow>,
    roles: Vec<&'static str>,
    /// Controls of the sections the user's role may use.
    can_share: bool,
    can_manage_members: bool,
    can_remove: bool,
    admin: bool,
    api_keys: Vec<(i64, String, String)>,
    /// A key just created, shown once.
    new_key: Option<String>,
    timezones: Vec<&'static str>,
    error: Option<String>,
}

/// `scheme://host` as the browser reached us, for the snippet and share links.
fn origin(state: &AppState, req: &HttpRequest) -> String {
    let scheme = if session::is_https(state, req) {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{}", req.connection_info().host())
}

pub async fn page(
    state: web::Data<AppState>,
    req: HttpRequest,
    domain: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    let (me, site, access) = access::member(&state, &req, &domain).await?;
    // A viewer has nothing here to change.
    access.require(Action::Configure)?;
    render(&state, &req, &me, access, site, Outcome::default()).await
}

/// What the last change left to say.
struct Outcome {
    status: StatusCode,
    error: Option<String>,
    new_key: Option<String>,
    new_share: Option<(String, String)>,
}

impl Default for Outcome {
    fn default() -> Self {
        Outcome {
            status: StatusCode::OK,
            error: None,
            new_key: None,
            new_share: None,
        }
    }
}

impl Outcome {
    fn refused(status: StatusCode, message: String) -> Outcome {
        Outcome {
            status,
            error: Some(message),
            ..Outcome::default()
        }
    }
}

async fn render(
    state: &AppState,
    req: &HttpRequest,
    me: &SignedIn,
    access: Access,
    site: Site,
    outcome: Outcome,
) -> Result<HttpResponse, PageError> {
    let store = state.store.clone();
    let id = site.id;
    let admin = access.can(Action::ManageApiKeys);
    let (links, goals, (excluded_ips, excluded_paths), members, api_keys) = blocking(move || {
        let conn = store.reader()?;
        Ok((
            users::share_links(&conn, id)?,
            sites::list_goals(&conn, id)?,
            sites::exclusions(&conn, id)?,
            users::members(&conn, id)?,
            if admin {
                sites::list_api_keys(&conn)?
            } else {
                Vec::new()
            },
        ))
    })
    .await?;
    let origin = origin(state, req);
    let share_url = |token: &str| format!("{origin}/share/{}?auth={token}", site.domain);
    let shares = links
        .into_iter()
        .map(|l| ShareRow {
            url: share_url(&format!("{}…", l.hint)),
            id: l.id,
            name: l.name,
        })
        .collect();
    let new_share = outcome.new_share.map(|(name, token)| ShareRow {
        id: 0,
        url: share_url(&token),
        name,
    });
    let members = members
        .into_iter()
        .map(|m| MemberRow {
            id: m.user_id,
            email: m.email,
            role: m.role.as_str(),
            options: Role::ALL
                .into_iter()
                .map(|r| (r.as_str(), r == m.role))
                .collect(),
        })
        .collect();
    let page = SettingsPage {
        signed_in: Some(Nav::of(me)),
        csrf: me.csrf_token.clone(),
        snippet: format!(
            "<script defer data-domain=\"{}\" src=\"{origin}/js/script.js\"></script>",
            site.domain
        ),
        domain: site.domain,
        timezone: site.timezone,
        public: site.public,
        shares,
        new_share,
        goals: goals.iter().map(|g| (g.id, g.display_name())).collect(),
        excluded_ips,
        excluded_paths,
        members,
        roles: Role::ALL.into_iter().map(Role::as_str).collect(),
        can_share: access.can(Action::Share),
        can_manage_members: access.can(Action::ManageMembers),
        can_remove: access.can(Action::RemoveSite),
        admin,
        api_keys,
        new_key: outcome.new_key,
        timezones: super::timezones(),
        error: outcome.error,
    };
    html_with_cookie(&page, outcome.status, None)
}

/// The rights each form action needs; `None` for an unknown action.
fn needs(action: &str) -> Option<Action> {
    Some(match action {
        "timezone" | "goal_add" | "goal_remove" | "exclusions" => Action::Configure,
        "public" | "share_add" | "share_remove" => Action::Share,
        "member_add" | "member_role" | "member_remove" => Action::ManageMembers,
        "remove" => Action::RemoveSite,
        "key_add" | "key_remove" => Action::ManageApiKeys,
        _ => return None,
    })
}

#[derive(Deserialize)]
pub struct SettingsForm {
    csrf: String,
    action: String,
    timezone: Option<String>,
    public: Option<String>,
    name: Option<String>,
    id: Option<i64>,
    event: Option<String>,
    page: Option<String>,
    confirm: Option<String>,
    excluded_ips: Option<String>,
    excluded_paths: Option<String>,
    email: Option<String>,
    role: Option<String>,
}

pub async fn update(
    state: web::Data<AppState>,
    req: HttpRequest,
    domain: web::Path<String>,
    form: web::Form<SettingsForm>,
) -> Result<HttpResponse, PageError> {
    let (me, site, access) = access::member(&state, &req, &domain).await?;
    me.check_csrf(&form.csrf)?;
    let f = form.into_inner();
    // Checked here, once, before any action: nothing below runs without it.
    access.require(
        needs(&f.action).ok_or_else(|| PageError::BadRequest("unknown settings action".into()))?,
    )?;
    let writer = state.ingestor.writer();
    let id = site.id;
    let back = format!("/{}/settings", site.domain);
    let answer =
        |outcome: Outcome| async { render(&state, &req, &me, access, site.clone(), outcome).await };
    let refuse = |message: String| answer(Outcome::refused(StatusCode::OK, message));
    let bad = |message: String| answer(Outcome::refused(StatusCode::BAD_REQUEST, message));
    // Only an admin may leave a site without an owner.
    let keep_an_owner = !access.admin();
    let last_owner = || {
        answer(Outcome::refused(
            StatusCode::CONFLICT,
            format!(
                "That is the last owner of {}: make another member owner first.",
                site.domain
            ),
        ))
    };
    match f.action.as_str() {
        "timezone" => {
            let tz = match super::valid_timezone(&f.timezone.unwrap_or_default()) {
                Ok(tz) => tz,
                Err(message) => return refuse(message).await,
            };
            // Rebuilds the site's rollups in the new timezone, in the background.
            state
                .upkeep
                .change_timezone(id, tz, state.raw_events_days)
                .await?;
        }
        "public" => {
            let public = f.public.as_deref() == Some("1");
            writer
                .run(move |tx| sites::set_public(tx, id, public))
                .await?;
        }
        "share_add" => {
            let name = f.name.unwrap_or_default().trim().to_string();
            if name.is_empty() || name.chars().count() > 100 {
                return refuse("A share link needs a name of 1 to 100 characters.".into()).await;
            }
            let token = auth::random_token().map_err(|e| PageError::Internal(e.to_string()))?;
            // Only a hash is stored, like a session's: the link is shown
            // whole on this answer only.
            let (hash, hint) = (
                auth::token_hash(&token),
                token[..users::SHARE_HINT_CHARS].to_string(),
            );
            let now = store::now_unix();
            let n = name.clone();
            writer
                .run(move |tx| users::add_share_link(tx, id, &n, &hash, &hint, now))
                .await?;
            return answer(Outcome {
                new_share: Some((name, token)),
                ..Outcome::default()
            })
            .await;
        }
        "share_remove" => {
            let link =
                f.id.ok_or_else(|| PageError::BadRequest("id is required".into()))?;
            writer
                .run(move |tx| users::delete_share_link(tx, id, link))
                .await?;
        }
        "goal_add" => {
            let event = f.event.unwrap_or_default().trim().to_string();
            let page = f.page.unwrap_or_default().trim().to_string();
            let kind = match (event.is_empty(), page.is_empty()) {
                (false, true) if event.chars().count() <= 120 => GoalKind::Event(event),
                (true, false) if page.starts_with('/') && page.len() <= 2000 => {
                    GoalKind::Page(page)
                }
                _ => {
                    return refuse(
                        "Give either an event name (up to 120 characters) or a page path starting with /."
                            .into(),
                    )
                    .await;
                }
            };
            writer
                .run(move |tx| sites::add_goal(tx, id, &kind).map(|_| ()))
                .await?;
        }
        "goal_remove" => {
            let goal =
                f.id.ok_or_else(|| PageError::BadRequest("id is required".into()))?;
            writer
                .run(move |tx| sites::remove_goal(tx, id, goal))
                .await?;
        }
        "exclusions" => {
            let ips = f.excluded_ips.unwrap_or_default();
            let paths = f.excluded_paths.unwrap_or_default();
            if ips.len() > 20_000 || paths.len() > 20_000 {
                return refuse("At most 20,000 characters per list.".into()).await;
            }
            if let Err(e) = Exclusions::parse(&ips, &paths) {
                return refuse(format!("{e}.")).await;
            }
            let tidy = |s: &str| {
                s.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            let (ips, paths) = (tidy(&ips), tidy(&paths));
            writer
                .run(move |tx| sites::set_exclusions(tx, id, &ips, &paths))
                .await?;
        }
        "key_add" => {
            let name = f.name.unwrap_or_default().trim().to_string();
            if name.is_empty() || name.chars().count() > 100 {
                return refuse("A key needs a name of 1 to 100 characters.".into()).await;
            }
            let key = keys::generate().map_err(|e| PageError::Internal(e.to_string()))?;
            let (prefix, hash) = (key[..keys::PREFIX_LEN].to_string(), keys::hash(&key));
            writer
                .run(move |tx| sites::add_api_key(tx, &name, &prefix, &hash))
                .await?;
            // Shown once, on this answer; never stored or shown again.
            return answer(Outcome {
                new_key: Some(key),
                ..Outcome::default()
            })
            .await;
        }
        "key_remove" => {
            let key =
                f.id.ok_or_else(|| PageError::BadRequest("id is required".into()))?;
            writer.run(move |tx| sites::remove_api_key(tx, key)).await?;
        }
        "member_add" => {
            let email = f.email.unwrap_or_default();
            let Some(email) = auth::valid_email(&email) else {
                return bad(format!(
                    "email: {:?} is not an e-mail address.",
                    email.trim()
                ))
                .await;
            };
            let Some(role) = f.role.as_deref().and_then(Role::parse) else {
                return bad("role: choose viewer, editor or owner.".into()).await;
            };
            let e = email.clone();
            // None: no such user; Some(false): already a member.
            let added = writer
                .run_for(move |tx| match users::find_user(tx, &e)? {
                    Some((user, _)) => Ok(Some(users::grant(tx, id, user.id, role)?)),
                    None => Ok(None),
                })
                .await?;
            match added {
                Some(true) => {}
                Some(false) => {
                    return bad(format!(
                        "email: {email} is already a member; change their role in the list."
                    ))
                    .await;
                }
                None => {
                    return bad(format!(
                        "email: there is no user {email}; users are added with `tally user add`."
                    ))
                    .await;
                }
            }
        }
        "member_role" | "member_remove" => {
            let member =
                f.id.ok_or_else(|| PageError::BadRequest("id is required".into()))?;
            let changed = if f.action == "member_role" {
                let Some(role) = f.role.as_deref().and_then(Role::parse) else {
                    return bad("role: choose viewer, editor or owner.".into()).await;
                };
                writer
                    .run_for(move |tx| users::set_role(tx, id, member, role, keep_an_owner))
                    .await?
            } else {
                writer
                    .run_for(move |tx| users::remove_member(tx, id, member, keep_an_owner))
                    .await?
            };
            match changed {
                MemberChange::Done => {}
                MemberChange::NotAMember => {
                    return bad(format!("id: no member {member} of {}.", site.domain)).await;
                }
                MemberChange::LastOwner => return last_owner().await,
            }
            if member == me.user.id {
                // Their own rights changed: the settings may be closed now.
                let to = if f.action == "member_remove" {
                    "/".to_string()
                } else {
                    format!("/{}", site.domain)
                };
                return Ok(redirect(&to));
            }
        }
        "remove" => {
            if f.confirm.as_deref().map(str::trim) != Some(site.domain.as_str()) {
                return refuse("Type the domain exactly to remove the site.".into()).await;
            }
            let d = site.domain.clone();
            writer.run(move |tx| sites::remove_site(tx, &d)).await?;
            tracing::info!(domain = %site.domain, "site removed from the dashboard");
            return Ok(redirect("/"));
        }
        _ => return Err(PageError::BadRequest("unknown settings action".into())),
    }
    Ok(redirect(&back))
}
