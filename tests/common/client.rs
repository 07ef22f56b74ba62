//! A browser-like client for the dashboard's HTML side: keeps cookies as a
//! browser does, does not follow redirects, posts forms and signs in
//! through `/login` with the form's CSRF token.

use std::collections::HashMap;
use std::time::Duration;

use super::{PASSWORD, Reply, Server};

pub struct Client<'a> {
    server: &'a Server,
    agent: ureq::Agent,
    /// Cookies by name; tests plant, steal or rename them here.
    pub cookies: HashMap<String, String>,
    /// Sent with every request, as a proxy in front would add them.
    pub headers: Vec<(String, String)>,
}

impl<'a> Client<'a> {
    pub fn new(server: &'a Server) -> Client<'a> {
        Client {
            server,
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(0)
                .timeout_global(Some(Duration::from_secs(60)))
                .build()
                .into(),
            cookies: HashMap::new(),
            headers: Vec::new(),
        }
    }

    /// Like [`Client::new`], as relayed by a trusted proxy for `ip` over
    /// `proto`.
    pub fn proxied(server: &'a Server, ip: &str, proto: &str) -> Client<'a> {
        Client::new(server)
            .with_header("X-Forwarded-For", ip)
            .with_header("X-Forwarded-Proto", proto)
    }

    /// Adds `name: value` to every request from now on.
    pub fn with_header(mut self, name: &str, value: &str) -> Client<'a> {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Signs in `email` (with [`PASSWORD`]) through the form and returns the
    /// client and the CSRF token of the session (read from the site list,
    /// which every signed-in user may open).
    pub fn signed_in(server: &'a Server, email: &str) -> (Client<'a>, String) {
        let mut c = Client::new(server);
        let r = c.sign_in(email, PASSWORD);
        assert_eq!(r.status, 303, "sign-in of {email}: {}", r.body);
        let csrf = field(&c.get("/").body, "csrf");
        (c, csrf)
    }

    /// The `Cookie` header a browser would send now.
    pub fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Keeps the cookies `r` sets; `Max-Age=0` removes one.
    fn keep_cookies(&mut self, r: &ureq::http::Response<ureq::Body>) {
        for v in r.headers().get_all("set-cookie") {
            let v = v.to_str().unwrap();
            let (pair, attrs) = v.split_once(';').unwrap_or((v, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if attrs.to_ascii_lowercase().contains("max-age=0") {
                self.cookies.remove(name.trim());
            } else {
                self.cookies
                    .insert(name.trim().to_string(), value.trim().to_string());
            }
        }
    }

    fn get_raw(&mut self, path: &str) -> ureq::http::Response<ureq::Body> {
        let mut req = self
            .agent
            .get(self.server.url(path))
            .header("Cookie", &self.cookie_header());
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        let r = req.call().expect("request failed");
        self.keep_cookies(&r);
        r
    }

    pub fn get(&mut self, path: &str) -> Reply {
        let r = self.get_raw(path);
        super::reply(Ok(r))
    }

    /// GETs `path` and returns the status, content type and body as bytes.
    pub fn get_bytes(&mut self, path: &str) -> (u16, String, Vec<u8>) {
        let mut r = self.get_raw(path);
        let kind = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = r.body_mut().read_to_vec().unwrap();
        (r.status().as_u16(), kind, body)
    }

    /// POSTs `form` URL-encoded, as a browser submits a form.
    pub fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Reply {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut req = self
            .agent
            .post(self.server.url(path))
            .header("Cookie", &self.cookie_header())
            .header("Content-Type", "application/x-www-form-urlencoded");
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        let r = req.send(body.as_str()).expect("request failed");
        self.keep_cookies(&r);
        super::reply(Ok(r))
    }

    /// POSTs a settings form of `domain` with the action and fields given.
    pub fn settings(
        &mut self,
        domain: &str,
        csrf: &str,
        action: &str,
        fields: &[(&str, &str)],
    ) -> Reply {
        let mut form = vec![("csrf", csrf), ("action", action)];
        form.extend_from_slice(fields);
        self.post(&format!("/{domain}/settings"), &form)
    }

    /// The CSRF token of the forms on `path` (and any cookie it sets, kept).
    pub fn csrf(&mut self, path: &str) -> String {
        let page = self.get(path);
        assert_eq!(page.status, 200, "{path}: {}", page.body);
        field(&page.body, "csrf")
    }

    /// The sign-in form's CSRF token (and its cookie, kept).
    pub fn login_csrf(&mut self) -> String {
        self.csrf("/login")
    }

    /// Signs in through the form, asking to go to `next`; the answer to the
    /// POST.
    pub fn sign_in_to(&mut self, email: &str, password: &str, next: &str) -> Reply {
        let csrf = self.login_csrf();
        self.post(
            "/login",
            &[
                ("csrf", &csrf),
                ("email", email),
                ("password", password),
                ("next", next),
            ],
        )
    }

    /// Signs in through the form, asking to go to `/`.
    pub fn sign_in(&mut self, email: &str, password: &str) -> Reply {
        self.sign_in_to(email, password, "/")
    }
}

/// The value of the first input named `name`.
pub fn field(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let at = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no field {name} in {html}"));
    let rest = &html[at + marker.len()..];
    rest[..rest.find('"').unwrap()].to_string()
}
