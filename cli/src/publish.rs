//! `sealbus pub`: seal one EdgeX message, publish it and exit.

use std::path::PathBuf;

use clap::Args;
use sealbus_bus_adapters::client::SecureMessageClient;
use sealbus_bus_adapters::config::BusConfig;
use sealbus_bus_adapters::secure::SecurityConfig;
use sealbus_envelope::MessageEnvelope;

use crate::{CliError, CliResult};

/// Connection and identity options shared by `pub` and `watch`.
#[derive(Debug, Args)]
pub struct ServiceArgs {
    /// Broker URL: mqtt://HOST:PORT or redis://HOST:PORT. Query parameters
    /// set EdgeX Optional keys, for example mqtt://127.0.0.1:1883?Qos=1.
    #[arg(long)]
    pub url: String,
    /// Identity directory written by `sealbus issue`.
    #[arg(long, value_name = "ID_DIR")]
    pub identity: PathBuf,
    /// Trust bundle file written by `sealbus bundle`.
    #[arg(long, value_name = "BUNDLE_FILE")]
    pub bundle: PathBuf,
}

impl ServiceArgs {
    /// Connects a secure client with this identity.
    pub async fn connect(&self) -> Result<SecureMessageClient, CliError> {
        let bus = BusConfig::from_url(&self.url)
            .map_err(|error| CliError::context("invalid --url", error))?;
        let security =
            SecurityConfig::from_files(&self.identity, &self.bundle).map_err(|error| {
                CliError::context("failed to load the identity and trust bundle", error)
            })?;
        SecureMessageClient::connect(&bus, security)
            .await
            .map_err(|error| CliError::context(format!("failed to connect to {}", self.url), error))
    }
}

/// Arguments of `sealbus pub`.
#[derive(Debug, Args)]
pub struct PubArgs {
    #[command(flatten)]
    pub service: ServiceArgs,
    /// Topic to publish on.
    #[arg(long)]
    pub topic: String,
    /// Envelope contentType. Default: application/json when the payload is
    /// valid JSON, text/plain when it is other UTF-8 text, otherwise
    /// application/octet-stream.
    #[arg(long, value_name = "TYPE")]
    pub content_type: Option<String>,
    /// Envelope correlationID. Default: a new random UUID.
    #[arg(long, value_name = "ID")]
    pub correlation_id: Option<String>,
    /// Payload text.
    #[arg(
        long,
        value_name = "TEXT",
        conflicts_with = "file",
        required_unless_present = "file"
    )]
    pub payload: Option<String>,
    /// File whose bytes are the payload.
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
}

fn default_content_type(payload: &[u8]) -> &'static str {
    if serde_json::from_slice::<serde_json::Value>(payload).is_ok() {
        sealbus_envelope::edgex::CONTENT_TYPE_JSON
    } else if std::str::from_utf8(payload).is_ok() {
        sealbus_envelope::edgex::CONTENT_TYPE_TEXT
    } else {
        "application/octet-stream"
    }
}

/// Returns a random RFC 4122 version 4 UUID.
pub fn random_uuid() -> String {
    let mut bytes = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
    bytes[6] = (bytes[6] & 0x0F) | 0x40;
    bytes[8] = (bytes[8] & 0x3F) | 0x80;
    let hex = crate::keys::hex(&bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// Runs `sealbus pub`.
pub async fn run(args: &PubArgs) -> CliResult {
    let payload = match (&args.payload, &args.file) {
        (Some(text), _) => text.as_bytes().to_vec(),
        (None, Some(path)) => std::fs::read(path).map_err(|error| {
            CliError::context(format!("failed to read --file {}", path.display()), error)
        })?,
        (None, None) => return Err(CliError::message("pass --payload TEXT or --file PATH")),
    };
    let content_type = args
        .content_type
        .clone()
        .unwrap_or_else(|| default_content_type(&payload).to_owned());
    let correlation_id = args.correlation_id.clone().unwrap_or_else(random_uuid);
    let envelope = MessageEnvelope::new(payload, correlation_id.clone(), content_type);

    let client = args.service.connect().await?;
    let published = client.publish(&envelope, &args.topic).await;
    let disconnected = client.disconnect().await;
    published.map_err(|error| {
        CliError::context(format!("failed to publish on {}", args.topic), error)
    })?;
    disconnected.map_err(|error| CliError::context("failed to flush and disconnect", error))?;
    eprintln!(
        "published on {} as {} (correlationID {correlation_id})",
        args.topic,
        client.name()
    );
    Ok(0)
}
