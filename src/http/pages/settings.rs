//! `/{domain}/settings`: the tracking snippet, timezone, public toggle,
//! share links, goals, and removing the site. Every change is a POST with
//! the session's CSRF token.

use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use super::session::{self, SignedIn};
use super::{Nav, blocking, html, redirect};
use crate::http::{AppState, PageError};
use crate::ingest::sites::Exclusions;
use crate::store::sites::{self, GoalKind, Site};
use crate::store::{self, users};
use crate::{auth, keys};

pub struct ShareRow {
    pub id: i64,
    pub name: String,
    pub url: String,
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
    goals: Vec<(i64, String)>,
    excluded_ips: String,
    excluded_paths: String,
    admin: bool,
    api_keys: Vec<(i64, String, String)>,
    /// A key just created, shown once.
    new_key: Option<String>,
    timezones: Vec<&'static str>,
    error: Option<String>,
}

/// The signed-in user and the site, if they may manage it.
async fn authorize(
    state: &AppState,
    req: &HttpRequest,
    domain: &str,
) -> Result<(SignedIn, Site), PageError> {
    let me = session::require_user(state, req).await?;
    let (store, user, d) = (
        state.store.clone(),
        me.user.clone(),
        domain.to_ascii_lowercase(),
    );
    let site = blocking(move || {
        let conn = store.reader()?;
        match sites::find_site(&conn, &d)? {
            Some(site) if users::can_view(&conn, &user, site.id)? => Ok(Some(site)),
            _ => Ok(None),
        }
    })
    .await?;
    Ok((me, site.ok_or(PageError::NotFound)?))
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
    let (me, site) = authorize(&state, &req, &domain).await?;
    render(&state, &req, &me, site, Outcome::default()).await
}

/// What the last change left to say.
#[derive(Default)]
struct Outcome {
    error: Option<String>,
    new_key: Option<String>,
}

async fn render(
    state: &AppState,
    req: &HttpRequest,
    me: &SignedIn,
    site: Site,
    outcome: Outcome,
) -> Result<HttpResponse, PageError> {
    let store = state.store.clone();
    let id = site.id;
    let admin = me.user.admin;
    let (links, goals, (excluded_ips, excluded_paths), api_keys) = blocking(move || {
        let conn = store.reader()?;
        Ok((
            users::share_links(&conn, id)?,
            sites::list_goals(&conn, id)?,
            sites::exclusions(&conn, id)?,
            if admin {
                sites::list_api_keys(&conn)?
            } else {
                Vec::new()
            },
        ))
    })
    .await?;
    let origin = origin(state, req);
    let shares = links
        .into_iter()
        .map(|l| ShareRow {
            url: format!("{origin}/share/{}?auth={}", site.domain, l.token),
            id: l.id,
            name: l.name,
        })
        .collect();
    html(&SettingsPage {
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
        goals: goals.iter().map(|g| (g.id, g.display_name())).collect(),
        excluded_ips,
        excluded_paths,
        admin,
        api_keys,
        new_key: outcome.new_key,
        timezones: super::timezones(),
        error: outcome.error,
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
}

pub async fn update(
    state: web::Data<AppState>,
    req: HttpRequest,
    domain: web::Path<String>,
    form: web::Form<SettingsForm>,
) -> Result<HttpResponse, PageError> {
    let (me, site) = authorize(&state, &req, &domain).await?;
    me.check_csrf(&form.csrf)?;
    let f = form.into_inner();
    let writer = state.ingestor.writer();
    let id = site.id;
    let back = format!("/{}/settings", site.domain);
    let refuse = |message: String| async {
        let outcome = Outcome {
            error: Some(message),
            new_key: None,
        };
        render(&state, &req, &me, site.clone(), outcome).await
    };
    let admin_only = || {
        if me.user.admin {
            Ok(())
        } else {
            Err(PageError::Forbidden("only admins manage API keys".into()))
        }
    };
    match f.action.as_str() {
        "timezone" => {
            let tz = match super::valid_timezone(&f.timezone.unwrap_or_default()) {
                Ok(tz) => tz,
                Err(message) => return refuse(message).await,
            };
            // Rebuilds the site's rollups in the new timezone, in the background.
            state
                .ingestor
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
            let now = store::now_unix();
            writer
                .run(move |tx| users::add_share_link(tx, id, &name, &token, now))
                .await?;
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
            admin_only()?;
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
            let outcome = Outcome {
                error: None,
                new_key: Some(key),
            };
            return render(&state, &req, &me, site.clone(), outcome).await;
        }
        "key_remove" => {
            admin_only()?;
            let key =
                f.id.ok_or_else(|| PageError::BadRequest("id is required".into()))?;
            writer.run(move |tx| sites::remove_api_key(tx, key)).await?;
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
