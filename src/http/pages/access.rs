//! Who may look at a site's pages: signed-in users at their sites, anyone
//! at a public site, a share token at its own site; and how the links of a
//! page keep a share token.

use actix_web::HttpRequest;

use super::session;
use super::view::ViewState;
use super::{Nav, blocking};
use crate::http::{AppState, PageError};
use crate::store::sites::Site;
use crate::store::{self, users};

/// Who may see this dashboard, and how its links carry that.
pub enum Viewer {
    /// A signed-in user with access to the site (who may change settings).
    User,
    /// A public site, or a share link (whose token every link keeps).
    Guest { auth: Option<String> },
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
            Viewer::User => None,
        }
    }

    /// The link to view `v` at `base` + `suffix`, keeping a share token.
    pub fn href(&self, suffix: &str, v: &ViewState) -> String {
        let mut s = format!("{}{suffix}?{}", self.base, v.query());
        if let Some(token) = self.auth() {
            s.push('&');
            s.push_str(&auth_pair(&token));
        }
        s
    }

    /// `base` + `suffix`, with the share token when there is one.
    pub fn path(&self, suffix: &str) -> String {
        match self.auth() {
            Some(token) => format!("{}{suffix}?{}", self.base, auth_pair(&token)),
            None => format!("{}{suffix}", self.base),
        }
    }
}

fn auth_pair(token: &str) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("auth", token)
        .finish()
}

/// The site at `domain` and who is looking, or why not. Under `/share/`
/// only a valid share token (`auth`) of this very site opens it; elsewhere
/// signed-in users see their sites and anyone sees a public site. An
/// unknown and a private site look alike to a stranger (both ask to sign
/// in); a signed-in user without access gets a 404.
pub async fn admit(
    state: &AppState,
    req: &HttpRequest,
    domain: &str,
    auth: Option<&str>,
) -> Result<Admitted, PageError> {
    let domain = domain.to_ascii_lowercase();
    let site = find_site(state, &domain).await?;
    if req.path().starts_with("/share/") {
        let site = site.ok_or(PageError::NotFound)?;
        let token = auth.unwrap_or("").to_string();
        let (store, id, t) = (state.store.clone(), site.id, token.clone());
        let valid = !token.is_empty()
            && blocking(move || Ok(users::share_link_valid(&*store.reader()?, id, &t)?)).await?;
        if !valid {
            return Err(PageError::NotFound);
        }
        return Ok(Admitted {
            site,
            viewer: Viewer::Guest { auth: Some(token) },
            base: format!("/share/{domain}"),
            nav: None,
        });
    }
    let public = site.as_ref().is_some_and(|s| s.public);
    let (viewer, nav) = match session::signed_in(state, req).await? {
        Some(me) => {
            let (store, user) = (state.store.clone(), me.user.clone());
            let allowed = match site.as_ref().map(|s| s.id) {
                Some(id) => {
                    blocking(move || Ok(users::can_view(&*store.reader()?, &user, id)?)).await?
                }
                None => false,
            };
            let nav = Some(Nav::of(&me));
            match (allowed, public) {
                (true, _) => (Viewer::User, nav),
                (false, true) => (Viewer::Guest { auth: None }, nav),
                (false, false) => return Err(PageError::NotFound),
            }
        }
        None if public => (Viewer::Guest { auth: None }, None),
        None => return Err(PageError::SignIn(req.uri().to_string())),
    };
    Ok(Admitted {
        site: site.ok_or(PageError::NotFound)?,
        viewer,
        base: format!("/{domain}"),
        nav,
    })
}

async fn find_site(state: &AppState, domain: &str) -> Result<Option<Site>, PageError> {
    let (store, d) = (state.store.clone(), domain.to_string());
    blocking(move || Ok(store::sites::find_site(&*store.reader()?, &d)?)).await
}
