//! `/`: the signed-in user's sites with a 30-day sparkline each, and adding
//! a site from the browser.

use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use super::session::{self, SignedIn};
use super::{Nav, blocking, html, redirect};
use crate::http::{AppState, PageError, query_context, settle_writes};
use crate::query::{self, Params};
use crate::store::users::Role;
use crate::store::{self, sites, users};

pub struct SiteCard {
    pub domain: String,
    pub href: String,
    pub points: String,
    pub visitors: String,
}

#[derive(Template)]
#[template(path = "sites.html")]
struct SitesPage {
    signed_in: Option<Nav>,
    csrf: String,
    sites: Vec<SiteCard>,
    error: Option<String>,
    timezones: Vec<&'static str>,
    weekly_summary: bool,
    /// Links to the users page.
    admin: bool,
}

pub async fn list(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, PageError> {
    let me = session::require_user(&state, &req).await?;
    render(&state, &me, None).await
}

async fn render(
    state: &AppState,
    me: &SignedIn,
    error: Option<String>,
) -> Result<HttpResponse, PageError> {
    let (store, user) = (state.store.clone(), me.user.clone());
    let (mine, weekly_summary) = {
        let store = store.clone();
        blocking(move || {
            let conn = store.reader()?;
            Ok((
                users::sites_of(&conn, &user)?,
                users::wants_weekly_summary(&conn, user.id)?,
            ))
        })
        .await?
    };
    settle_writes(state).await;
    let contexts: Vec<_> = mine.iter().map(query_context).collect();
    let reports = state.reports.clone();
    let cards = blocking(move || {
        let mut cards = Vec::new();
        for (site, ctx) in mine.iter().zip(&contexts) {
            let mut p = Params::new();
            p.insert("site_id".into(), site.domain.clone());
            p.insert("period".into(), "30d".into());
            p.insert("metrics".into(), "visitors".into());
            let series = query::timeseries(&*reports, site, &p, ctx)?;
            let values: Vec<f64> = series["results"]
                .as_array()
                .map(|rows| {
                    rows.iter()
                        .map(|r| r["visitors"].as_f64().unwrap_or(0.0))
                        .collect()
                })
                .unwrap_or_default();
            let total = query::aggregate(&*reports, site, &p, ctx)?["results"]["visitors"]["value"]
                .as_i64()
                .unwrap_or(0);
            cards.push(SiteCard {
                href: format!("/{}", site.domain),
                domain: site.domain.clone(),
                points: super::chart::sparkline(&values),
                visitors: super::view::count(total),
            });
        }
        Ok(cards)
    })
    .await?;
    html(&SitesPage {
        signed_in: Some(Nav::of(me)),
        csrf: me.csrf_token.clone(),
        sites: cards,
        error,
        timezones: super::timezones(),
        weekly_summary,
        admin: me.user.admin,
    })
}

#[derive(Deserialize)]
pub struct WeeklySummary {
    csrf: String,
    /// "1" to receive the e-mails, anything else to stop them.
    on: String,
}

/// `POST /account/summary`: the signed-in user's choice of weekly e-mails.
pub async fn weekly_summary(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: web::Form<WeeklySummary>,
) -> Result<HttpResponse, PageError> {
    let me = session::require_user(&state, &req).await?;
    me.check_csrf(&form.csrf)?;
    let (id, on) = (me.user.id, form.on == "1");
    state
        .ingestor
        .writer()
        .run_for(move |tx| users::set_weekly_summary(tx, id, on))
        .await?;
    Ok(redirect("/"))
}

#[derive(Deserialize)]
pub struct AddSite {
    csrf: String,
    domain: String,
    timezone: String,
}

pub async fn add(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: web::Form<AddSite>,
) -> Result<HttpResponse, PageError> {
    let me = session::require_user(&state, &req).await?;
    me.check_csrf(&form.csrf)?;
    let Some(domain) = sites::new_domain(&form.domain) else {
        return render(
            &state,
            &me,
            Some("Enter a bare domain like example.com (no scheme, path or port).".into()),
        )
        .await;
    };
    let timezone = match super::valid_timezone(&form.timezone) {
        Ok(tz) => tz,
        Err(message) => return render(&state, &me, Some(message)).await,
    };
    let user = me.user.clone();
    let d = domain.clone();
    let added = state
        .ingestor
        .writer()
        .run_for(move |tx| match sites::add_site(tx, &d, &timezone, false) {
            Ok(site) => {
                // Whoever adds a site owns it, admins too: so a site added
                // from the dashboard starts with an owner.
                users::grant(tx, site.id, user.id, Role::Owner)?;
                Ok(true)
            }
            Err(store::StoreError::SiteExists(_)) => Ok(false),
            Err(e) => Err(e),
        })
        .await?;
    if !added {
        return render(
            &state,
            &me,
            Some(format!("{domain} is already registered.")),
        )
        .await;
    }
    tracing::info!(%domain, "site added from the dashboard");
    Ok(redirect(&format!("/{domain}/settings")))
}
