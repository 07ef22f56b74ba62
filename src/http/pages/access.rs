//! Who may look at a site's pages: signed-in users at their sites, anyone
//! at a public site, a share token at its own site; and how the links of a
//! page keep a share token.

use actix_web::HttpRequest;

use super::session::{self, SignedIn};
use super::view::ViewState;
use super::{Nav, blocking};
use crate::http::{AppState, PageError};
use crate::store::sites::Site;
use crate::store::{self, users};

/// Who may see this dashboard, and how its links carry that.
pub enum Viewer {
    User(SignedIn),
    /// A public site, or a share link (whose token every link keeps).
    Guest {
        auth: Option<String>,
    },
}

/// The site at `domain` and who is looking, or why not: signed-in users see
/// their sites, anyone sees a public site, a valid share token opens its
/// site. Unknown and private sites look alike to a stranger.
async fn admit(
    state: &AppState,
    req: &HttpRequest,
    domain: &str,
    share: Option<&str>,
) -> Result<(Site, Viewer, String), PageError> {
    let domain = domain.to_ascii_lowercase();
    let site = find_site(state, &domain).await?;
    if let Some(token) = share {
        let site = site.ok_or(PageError::NotFound)?;
        let (store, id, t) = (state.store.clone(), site.id, token.to_string());
        let valid = !token.is_empty()
            && blocking(move || Ok(users::share_link_valid(&*store.reader()?, id, &t)?)).await?;
        if !valid {
            return Err(PageError::NotFound);
        }
        let auth = Some(token.to_string());
        return Ok((site, Viewer::Guest { auth }, format!("/share/{domain}")));
    }
    let public = site.as_ref().is_some_and(|s| s.public);
    let viewer = match session::signed_in(state, req).await? {
        Some(me) => {
            let (store, user) = (state.store.clone(), me.user.clone());
            let allowed = match site.as_ref().map(|s| s.id) {
                Some(id) => {
                    blocking(move || Ok(users::can_view(&*store.reader()?, &user, id)?)).await?
                }
                None => false,
            };
            match (allowed, public) {
                (true, _) => Viewer::User(me),
                (false, true) => Viewer::Guest { auth: None },
                (false, false) => return Err(PageError::NotFound),
            }
        }
        None if public => Viewer::Guest { auth: None },
        None => return Err(PageError::SignIn(req.uri().to_string())),
    };
    let site = site.ok_or(PageError::NotFound)?;
    Ok((site, viewer, format!("/{domain}")))
}

pub async fn find_site(state: &AppState, domain: &str) -> Result<Option<Site>, PageError> {
    let (store, d) = (state.store.clone(), domain.to_string());
    blocking(move || Ok(store::sites::find_site(&*store.reader()?, &d)?)).await
}

/// What a page learns from [`admit`].
pub struct Admitted {
    pub site: Site,
    pub viewer: Viewer,
    /// `/{domain}` or `/share/{domain}`.
    pub base: String,
    /// The account corner: shown to a signed-in user even on a public site.
    pub nav: Option<Nav>,
}

impl Admitted {
    pub fn auth(&self) -> Option<String> {
        match &self.viewer {
            Viewer::Guest { auth } => auth.clone(),
            Viewer::User(_) => None,
        }
    }

    /// The link to view `v` at `base` + `suffix`, keeping a share token.
    pub fn href(&self, suffix: &str, v: &ViewState) -> String {
        let mut s = format!("{}{suffix}?{}", self.base, v.query());
        if let Some(a) = self.auth() {
            s.push('&');
            s.push_str(
                &url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("auth", &a)
                    .finish(),
            );
        }
        s
    }

    /// `base` + `suffix`, with the share token when there is one.
    pub fn path(&self, suffix: &str, query: &str) -> String {
        let mut q = url::form_urlencoded::Serializer::new(query.to_string());
        if let Some(a) = self.auth() {
            q.append_pair("auth", &a);
        }
        let q = q.finish();
        let sep = if q.is_empty() { "" } else { "?" };
        format!("{}{suffix}{sep}{q}", self.base)
    }
}

/// [`admit`] for a route under `/{domain}` or `/share/{domain}`.
pub async fn admit_request(
    state: &AppState,
    req: &HttpRequest,
    domain: &str,
    auth: Option<&str>,
) -> Result<Admitted, PageError> {
    let share = req.path().starts_with("/share/");
    let (site, viewer, base) =
        admit(state, req, domain, share.then_some(auth.unwrap_or(""))).await?;
    let nav = match &viewer {
        Viewer::User(me) => Some(Nav::of(me)),
        Viewer::Guest { auth: None } => session::signed_in(state, req).await?.as_ref().map(Nav::of),
        Viewer::Guest { auth: Some(_) } => None,
    };
    Ok(Admitted {
        site,
        viewer,
        base,
        nav,
    })
}
