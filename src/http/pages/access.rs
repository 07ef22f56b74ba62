//! Who may look at a site's pages: signed-in users at their sites, anyone
//! at a public site, a share token at its own site; what each signed-in
//! user may change there (`Access::can`, the one place that decides); and
//! how the links of a page keep a share token.

use actix_web::HttpRequest;

use super::session::{self, SignedIn};
use super::view::ViewState;
use super::{Nav, blocking};
use crate::auth;
use crate::http::{AppState, PageError};
use crate::store::sites::Site;
use crate::store::users::{Role, User};
use crate::store::{self, users};

/// What someone may do at a site. Each needs the role named by
/// [`Action::least_role`] or more; admins may do everything everywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The dashboard, details, exports and realtime view.
    View,
    /// Goals, excluded traffic and the timezone.
    Configure,
    /// The public toggle and share links: showing the numbers to people
    /// who are not members.
    Share,
    /// Adding members, changing their roles and removing them.
    ManageMembers,
    /// Removing the site and all its data.
    RemoveSite,
    /// Stats API keys, which read every site.
    ManageApiKeys,
    /// The users page: every user, their sites, and removing users. Not
    /// tied to a site: see [`Access::server`].
    ManageUsers,
}

impl Action {
    /// The least role that may do this; `None` for admins only.
    fn least_role(self) -> Option<Role> {
        match self {
            Action::View => Some(Role::Viewer),
            Action::Configure => Some(Role::Editor),
            Action::Share | Action::ManageMembers | Action::RemoveSite => Some(Role::Owner),
            Action::ManageApiKeys | Action::ManageUsers => None,
        }
    }
}

/// A signed-in user's rights at one site: an admin, or a member's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    admin: bool,
    role: Option<Role>,
}

impl Access {
    /// `None` when `user` has no access at all (not an admin, no role).
    pub fn of(user: &User, role: Option<Role>) -> Option<Access> {
        (user.admin || role.is_some()).then_some(Access {
            admin: user.admin,
            role,
        })
    }

    /// A signed-in user's rights outside any site: an admin's, or none
    /// but those a role gives somewhere (so only the admins' actions are
    /// worth asking about).
    pub fn server(user: &User) -> Access {
        Access {
            admin: user.admin,
            role: None,
        }
    }

    pub fn admin(self) -> bool {
        self.admin
    }

    pub fn can(self, action: Action) -> bool {
        self.admin
            || match (action.least_role(), self.role) {
                (Some(least), Some(role)) => role >= least,
                _ => false,
            }
    }

    /// A 403 naming what is missing, unless [`Access::can`].
    pub fn require(self, action: Action) -> Result<(), PageError> {
        if self.can(action) {
            return Ok(());
        }
        Err(PageError::Forbidden(match action.least_role() {
            Some(role) => format!(
                "only a site's {}s{} and admins may do this",
                role,
                if role == Role::Owner {
                    ""
                } else {
                    " and owners"
                }
            ),
            None => "only admins may do this".into(),
        }))
    }
}

/// Who may see this dashboard, and how its links carry that.
pub enum Viewer {
    /// A signed-in user with access to the site, and their rights there.
    User(Access),
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
    /// What let the viewer in, for a check again later ([`still_admitted`]).
    pub pass: Pass,
}

/// What admitted a viewer to a site. A live stream lasts minutes, longer
/// than a request: it checks again that its pass still holds, so revoked
/// access ends it.
#[derive(Debug, Clone)]
pub enum Pass {
    /// A login session (its token's hash) whose user has access.
    Session(Vec<u8>),
    /// A share link of the site (its token's hash).
    ShareLink(Vec<u8>),
    /// The site is public.
    Public,
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
        // Only the token's hash is stored; it is looked up as bytes.
        let (store, id, hash) = (state.store.clone(), site.id, auth::token_hash(&token));
        let valid = !token.is_empty()
            && blocking(move || Ok(users::share_link_valid(&*store.reader()?, id, &hash)?)).await?;
        if !valid {
            return Err(PageError::NotFound);
        }
        let pass = Pass::ShareLink(auth::token_hash(&token));
        return Ok(Admitted {
            site,
            viewer: Viewer::Guest { auth: Some(token) },
            base: format!("/share/{domain}"),
            nav: None,
            pass,
        });
    }
    let public = site.as_ref().is_some_and(|s| s.public);
    let (viewer, nav, pass) = match session::signed_in(state, req).await? {
        Some(me) => {
            let access = match site.as_ref() {
                Some(site) => access_at(state, &me.user, site.id).await?,
                None => None,
            };
            let nav = Some(Nav::of(&me));
            match (access, public) {
                (Some(access), _) => (
                    Viewer::User(access),
                    nav,
                    Pass::Session(me.token_hash().to_vec()),
                ),
                (None, true) => (Viewer::Guest { auth: None }, nav, Pass::Public),
                (None, false) => return Err(PageError::NotFound),
            }
        }
        None if public => (Viewer::Guest { auth: None }, None, Pass::Public),
        None => return Err(PageError::SignIn(req.uri().to_string())),
    };
    Ok(Admitted {
        site: site.ok_or(PageError::NotFound)?,
        viewer,
        base: format!("/{domain}"),
        nav,
        pass,
    })
}

/// Whether `pass` still admits its holder to `site` as it did: the site is
/// still there (under the same id), and the session is still open with its
/// user still allowed to view, the share link still exists, or the site is
/// still public. A few indexed reads, off the async workers.
pub async fn still_admitted(state: &AppState, site: &Site, pass: &Pass) -> Result<bool, PageError> {
    let (store, domain, site_id, pass) = (
        state.store.clone(),
        site.domain.clone(),
        site.id,
        pass.clone(),
    );
    let idle = state.session_idle_secs;
    blocking(move || {
        let conn = store.reader()?;
        let Some(now) = store::sites::find_site(&conn, &domain)?.filter(|s| s.id == site_id) else {
            return Ok(false);
        };
        Ok(match pass {
            Pass::Public => now.public,
            Pass::ShareLink(hash) => users::share_link_valid(&conn, site_id, &hash)?,
            Pass::Session(hash) => {
                match users::find_session(
                    &conn,
                    &hash,
                    store::now_unix(),
                    idle,
                    session::SESSION_SECS,
                )? {
                    Some(s) => users::can_view(&conn, &s.user, site_id)?,
                    None => false,
                }
            }
        })
    })
    .await
}

/// The signed-in user, the site at `domain` and their rights there; a 404
/// when they have none (as for an unknown site), a sign-in without a
/// session. For the pages that change a site.
pub async fn member(
    state: &AppState,
    req: &HttpRequest,
    domain: &str,
) -> Result<(SignedIn, Site, Access), PageError> {
    let me = session::require_user(state, req).await?;
    let site = find_site(state, &domain.to_ascii_lowercase())
        .await?
        .ok_or(PageError::NotFound)?;
    let access = access_at(state, &me.user, site.id)
        .await?
        .ok_or(PageError::NotFound)?;
    Ok((me, site, access))
}

/// `user`'s rights at `site_id`, read afresh on every request, so a
/// removed member or a changed role counts from the next request on.
async fn access_at(
    state: &AppState,
    user: &User,
    site_id: i64,
) -> Result<Option<Access>, PageError> {
    let (store, u) = (state.store.clone(), user.clone());
    let role = blocking(move || Ok(users::role_of(&*store.reader()?, site_id, u.id)?)).await?;
    Ok(Access::of(user, role).filter(|a| a.can(Action::View)))
}

async fn find_site(state: &AppState, domain: &str) -> Result<Option<Site>, PageError> {
    let (store, d) = (state.store.clone(), domain.to_string());
    blocking(move || Ok(store::sites::find_site(&*store.reader()?, &d)?)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(admin: bool, role: Option<Role>) -> Option<Access> {
        let user = User {
            id: 1,
            email: "a@example.com".into(),
            admin,
        };
        Access::of(&user, role)
    }

    /// The table the README shows: each role may do what the one below it
    /// may, and more; admins everything; nobody else anything.
    #[test]
    fn each_role_may_do_what_the_table_says() {
        use Action::*;
        let all = [
            View,
            Configure,
            Share,
            ManageMembers,
            RemoveSite,
            ManageApiKeys,
            ManageUsers,
        ];
        let table: [(Option<Access>, &[Action]); 4] = [
            (access(false, Some(Role::Viewer)), &[View]),
            (access(false, Some(Role::Editor)), &[View, Configure]),
            (
                access(false, Some(Role::Owner)),
                &[View, Configure, Share, ManageMembers, RemoveSite],
            ),
            (access(true, None), &all),
        ];
        for (who, allowed) in table {
            let who = who.unwrap();
            for action in all {
                assert_eq!(
                    who.can(action),
                    allowed.contains(&action),
                    "{who:?} {action:?}"
                );
                assert_eq!(who.require(action).is_ok(), allowed.contains(&action));
            }
        }
        assert!(access(false, None).is_none());
        // Outside any site only admins may act, whatever roles one holds.
        let ann = User {
            id: 2,
            email: "ann@example.com".into(),
            admin: false,
        };
        assert!(Access::server(&ann).require(ManageUsers).is_err());
        let root = User { admin: true, ..ann };
        assert!(Access::server(&root).require(ManageUsers).is_ok());
    }
}
