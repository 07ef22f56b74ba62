//! Sending mail over SMTP (`[smtp]`), for the weekly summaries: one message
//! per recipient, so no user sees another's address. The only outbound
//! connection Tally makes, and only when configured.

use std::time::Duration;

use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{Message, SmtpTransport, Transport};

use crate::config::{SmtpConfig, SmtpSecurity};

const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("{0:?} is not an e-mail address")]
    Address(String),
    #[error("building the message: {0}")]
    Message(String),
    #[error("SMTP: {0}")]
    Smtp(String),
}

/// A configured SMTP relay.
#[derive(Clone)]
pub struct Mailer {
    transport: SmtpTransport,
    from: Mailbox,
    /// Host and port, for logs.
    pub server: String,
}

impl Mailer {
    /// `None` when `[smtp] host` is empty.
    pub fn from_config(c: &SmtpConfig) -> Result<Option<Mailer>, MailError> {
        if c.host.is_empty() {
            return Ok(None);
        }
        let smtp = |e: lettre::transport::smtp::Error| MailError::Smtp(e.to_string());
        let mut builder = match c.security {
            SmtpSecurity::Starttls => SmtpTransport::starttls_relay(&c.host).map_err(smtp)?,
            SmtpSecurity::Tls => SmtpTransport::relay(&c.host).map_err(smtp)?,
            SmtpSecurity::None => SmtpTransport::builder_dangerous(&c.host),
        }
        .port(c.port)
        .timeout(Some(TIMEOUT));
        if !c.username.is_empty() {
            builder = builder.credentials(Credentials::new(c.username.clone(), c.password.clone()));
        }
        let from = c
            .from
            .parse()
            .map_err(|_| MailError::Address(c.from.clone()))?;
        Ok(Some(Mailer {
            transport: builder.build(),
            from,
            server: format!("{}:{}", c.host, c.port),
        }))
    }

    /// Sends a plain-text message to one recipient. Blocking.
    pub fn send(&self, to: &str, subject: &str, body: &str) -> Result<(), MailError> {
        let to: Mailbox = to.parse().map_err(|_| MailError::Address(to.to_string()))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body.to_string())
            .map_err(|e| MailError::Message(e.to_string()))?;
        self.transport
            .send(&message)
            .map(|_| ())
            .map_err(|e| MailError::Smtp(e.to_string()))
    }
}
