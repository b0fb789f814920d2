//! Google Workspace, through the Admin SDK Directory API, with a service
//! account and domain-wide delegation: a JWT signed with the account's RSA
//! key (RS256) is exchanged at the token endpoint for an access token
//! acting as a Workspace admin (RFC 7523), then `GET
//! /admin/directory/v1/users` pages (500 a page, `nextPageToken`) and,
//! when asked, Chrome OS devices. Suspended users and deprovisioned
//! devices are left out. A `429` is handed to the host.

use cohort_sdk::config::{Config, field, invalid};
use cohort_sdk::encoding::base64url;
use cohort_sdk::host::{self, Method};
use cohort_sdk::importer::{ImportError, Importer, Page, RecordProblem};
use cohort_sdk::{ConfigError, ConfigKind, DirectoryRecord, PluginInfo};
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{SignatureEncoding, Signer};
use serde::Deserialize;
use serde_json::{Value, json};

/// The importer.
pub struct GoogleWorkspace;

const USERS_SCOPE: &str = "https://www.googleapis.com/auth/admin.directory.user.readonly";
const DEVICES_SCOPE: &str =
    "https://www.googleapis.com/auth/admin.directory.device.chromeos.readonly";
/// A device page's cursor starts with this.
const DEVICES: &str = "devices:";

#[derive(Deserialize)]
struct Key {
    client_email: String,
    private_key: String,
    #[serde(default)]
    token_uri: Option<String>,
}

#[derive(Deserialize)]
struct Token {
    access_token: String,
}

fn key(config: &Config) -> Result<Key, ConfigError> {
    let raw = config.require_text("service_account_key")?;
    let k: Key = serde_json::from_str(raw).map_err(|e| {
        invalid(
            "service_account_key",
            format!("not a service account JSON key: {e}"),
        )
    })?;
    rsa::RsaPrivateKey::from_pkcs8_pem(&k.private_key).map_err(|e| {
        invalid(
            "service_account_key",
            format!("the private key does not read: {e}"),
        )
    })?;
    Ok(k)
}

/// The signed assertion for the token request (RFC 7523 §2.1).
fn assertion(
    key: &Key,
    subject: &str,
    scope: &str,
    audience: &str,
    now: i64,
) -> Result<String, String> {
    let header = base64url(json!({"alg": "RS256", "typ": "JWT"}).to_string().as_bytes());
    let claims = base64url(
        json!({"iss": key.client_email, "sub": subject, "scope": scope, "aud": audience,
               "iat": now, "exp": now + 3600})
        .to_string()
        .as_bytes(),
    );
    let input = format!("{header}.{claims}");
    let private =
        rsa::RsaPrivateKey::from_pkcs8_pem(&key.private_key).map_err(|e| e.to_string())?;
    let signer = rsa::pkcs1v15::SigningKey::<rsa::sha2::Sha256>::new(private);
    let signature = signer.sign(input.as_bytes()).to_vec();
    Ok(format!("{input}.{}", base64url(&signature)))
}

fn user_record(u: &Value) -> Result<Option<DirectoryRecord>, RecordProblem> {
    let text = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
    };
    let Some(id) = text(u.get("id")) else {
        return Err(RecordProblem {
            external_id: None,
            message: "a user has no id".into(),
        });
    };
    if u.get("suspended") == Some(&Value::Bool(true))
        || u.get("archived") == Some(&Value::Bool(true))
    {
        return Ok(None);
    }
    let Some(email) = text(u.get("primaryEmail")) else {
        return Err(RecordProblem {
            external_id: Some(id),
            message: "the user has no primaryEmail".into(),
        });
    };
    let mut r = DirectoryRecord::user(id)
        .with("email", email.clone())
        .with("username", email);
    let name = u.get("name");
    for (k, ours) in [
        ("givenName", "first_name"),
        ("familyName", "last_name"),
        ("fullName", "display_name"),
    ] {
        if let Some(v) = text(name.and_then(|n| n.get(k))) {
            r = r.with(ours, v);
        }
    }
    // The primary organization (or the first): title, department, cost center.
    let orgs = u.get("organizations").and_then(Value::as_array);
    let org = orgs.and_then(|o| {
        o.iter()
            .find(|x| x.get("primary") == Some(&Value::Bool(true)))
            .or_else(|| o.first())
    });
    for (k, ours) in [
        ("title", "job_title"),
        ("department", "department"),
        ("costCenter", "cost_center"),
        ("name", "company"),
    ] {
        if let Some(v) = text(org.and_then(|o| o.get(k))) {
            r = r.with(ours, v);
        }
    }
    let employee_id = u
        .get("externalIds")
        .and_then(Value::as_array)
        .and_then(|ids| {
            ids.iter()
                .find(|x| x.get("type").and_then(Value::as_str) == Some("organization"))
        })
        .and_then(|x| text(x.get("value")));
    if let Some(e) = employee_id {
        r = r.with("employee_id", e);
    }
    Ok(Some(r))
}

fn device_record(d: &Value) -> Result<Option<DirectoryRecord>, RecordProblem> {
    let text = |k: &str| {
        d.get(k)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
    };
    let Some(id) = text("deviceId") else {
        return Err(RecordProblem {
            external_id: None,
            message: "a device has no deviceId".into(),
        });
    };
    if text("status").as_deref() == Some("DEPROVISIONED") {
        return Ok(None);
    }
    let serial = text("serialNumber");
    let hostname = text("annotatedAssetId")
        .or_else(|| serial.clone())
        .ok_or_else(|| RecordProblem {
            external_id: Some(id.clone()),
            message: "the device has neither an asset id nor a serial number".into(),
        })?;
    let mut r = DirectoryRecord::device(id)
        .with("hostname", hostname.replace(' ', "-"))
        .with("os_family", "linux".to_string())
        .with_opt("serial_number", serial)
        .with_opt("os_version", text("osVersion"))
        .with_opt("display_name", text("model"))
        .with("mdm_enrolled", true);
    if let Some(owner) = text("annotatedUser") {
        r = r.with("owner", owner);
    }
    Ok(Some(r))
}

impl Importer for GoogleWorkspace {
    fn describe() -> PluginInfo {
        PluginInfo {
            display_name: "Google Workspace".into(),
            description: "Users and Chrome OS devices from Google Workspace (Admin SDK).".into(),
            config: vec![
                field(
                    "service_account_key",
                    "Service account key",
                    "The service account's JSON key file, pasted whole. Stored encrypted.",
                    ConfigKind::Secret,
                    true,
                ),
                field(
                    "admin_email",
                    "Admin to act as",
                    "A Workspace admin the service account impersonates (domain-wide delegation with the admin.directory.user.readonly scope, and admin.directory.device.chromeos.readonly for devices).",
                    ConfigKind::Text,
                    true,
                ),
                field(
                    "customer",
                    "Customer",
                    "The customer id; default my_customer (the admin's own account).",
                    ConfigKind::Text,
                    false,
                ),
                field(
                    "devices",
                    "Chrome OS devices",
                    "Also read Chrome OS devices, bound to their annotated user.",
                    ConfigKind::Boolean,
                    false,
                ),
                field(
                    "token_url",
                    "Token URL",
                    "Instead of the key's token_uri: a proxy. Rarely needed.",
                    ConfigKind::Url,
                    false,
                ),
                field(
                    "api_url",
                    "API URL",
                    "Instead of https://admin.googleapis.com: a proxy. Rarely needed.",
                    ConfigKind::Url,
                    false,
                ),
            ],
        }
    }

    fn validate_config(config: &Config) -> Result<(), ConfigError> {
        key(config)?;
        if !config.require_text("admin_email")?.contains('@') {
            return Err(invalid("admin_email", "an admin's email address"));
        }
        Ok(())
    }

    fn fetch_page(config: &Config, cursor: Option<String>) -> Result<Page, ImportError> {
        let key = key(config)?;
        let devices_on = config.flag("devices", false);
        let scope = if devices_on {
            format!("{USERS_SCOPE} {DEVICES_SCOPE}")
        } else {
            USERS_SCOPE.to_string()
        };
        let token_url = config
            .text("token_url")
            .filter(|u| !u.is_empty())
            .map(String::from)
            .or(key.token_uri.clone())
            .unwrap_or_else(|| "https://oauth2.googleapis.com/token".into());
        let now = host::now_millis() / 1000;
        let jwt = assertion(
            &key,
            config.require_text("admin_email")?,
            &scope,
            &token_url,
            now,
        )
        .map_err(ImportError::Other)?;
        let (token, _): (Token, _) = host::request(Method::Post, token_url.as_str())
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", &jwt),
            ])
            .fetch_json()?;
        let api = config
            .text("api_url")
            .filter(|u| !u.is_empty())
            .unwrap_or("https://admin.googleapis.com")
            .trim_end_matches('/')
            .to_string();
        let customer = config
            .text("customer")
            .filter(|c| !c.is_empty())
            .unwrap_or("my_customer")
            .to_string();
        let mut records = Vec::new();
        let mut problems = Vec::new();
        if let Some(rest) = cursor.as_deref().and_then(|c| c.strip_prefix(DEVICES)) {
            let mut url = format!(
                "{api}/admin/directory/v1/customer/{customer}/devices/chromeos?maxResults=200"
            );
            if !rest.is_empty() {
                url.push_str("&pageToken=");
                url.push_str(rest);
            }
            let (page, _): (Value, _) = host::request(Method::Get, url)
                .bearer(&token.access_token)
                .fetch_json()?;
            for d in page
                .get("chromeosdevices")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                match device_record(d) {
                    Ok(Some(r)) => records.push(r),
                    Ok(None) => {}
                    Err(p) => problems.push(p),
                }
            }
            let next = page
                .get("nextPageToken")
                .and_then(Value::as_str)
                .map(|t| format!("{DEVICES}{t}"));
            return Ok(Page {
                records,
                problems,
                next_cursor: next,
            });
        }
        let mut url = format!(
            "{api}/admin/directory/v1/users?customer={customer}&maxResults=500&projection=full"
        );
        if let Some(t) = cursor.as_deref().filter(|t| !t.is_empty()) {
            url.push_str("&pageToken=");
            url.push_str(t);
        }
        let (page, _): (Value, _) = host::request(Method::Get, url)
            .bearer(&token.access_token)
            .fetch_json()?;
        for u in page
            .get("users")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            match user_record(u) {
                Ok(Some(r)) => records.push(r),
                Ok(None) => {}
                Err(p) => problems.push(p),
            }
        }
        // Users first, then (when asked) devices, so owners exist to bind.
        let next = match page.get("nextPageToken").and_then(Value::as_str) {
            Some(t) => Some(t.to_string()),
            None if devices_on => Some(DEVICES.to_string()),
            None => None,
        };
        Ok(Page {
            records,
            problems,
            next_cursor: next,
        })
    }
}

cohort_sdk::export_importer!(GoogleWorkspace);

#[cfg(test)]
mod tests {
    use super::*;

    /// A throwaway test key (never used anywhere else).
    pub const TEST_KEY: &str = include_str!("../testdata/test-key.pem");

    #[test]
    fn the_assertion_is_an_rs256_jwt_that_verifies() {
        use rsa::signature::Verifier;
        let key = Key {
            client_email: "cohort@proj.iam.gserviceaccount.com".into(),
            private_key: TEST_KEY.into(),
            token_uri: None,
        };
        let jwt = assertion(
            &key,
            "admin@example.com",
            USERS_SCOPE,
            "https://oauth2.googleapis.com/token",
            1_700_000_000,
        )
        .unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let private = rsa::RsaPrivateKey::from_pkcs8_pem(TEST_KEY).unwrap();
        let verifying =
            rsa::pkcs1v15::VerifyingKey::<rsa::sha2::Sha256>::new(private.to_public_key());
        let sig_bytes = decode(parts[2]);
        let sig = rsa::pkcs1v15::Signature::try_from(sig_bytes.as_slice()).unwrap();
        verifying
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
            .unwrap();
        let claims: Value = serde_json::from_slice(&decode(parts[1])).unwrap();
        assert_eq!(claims["sub"], "admin@example.com");
        assert_eq!(claims["exp"], 1_700_003_600);
    }

    fn decode(s: &str) -> Vec<u8> {
        let val = |c: u8| -> u32 {
            match c {
                b'A'..=b'Z' => u32::from(c - b'A'),
                b'a'..=b'z' => u32::from(c - b'a') + 26,
                b'0'..=b'9' => u32::from(c - b'0') + 52,
                b'-' => 62,
                _ => 63,
            }
        };
        let mut out = Vec::new();
        for chunk in s.as_bytes().chunks(4) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, c)| n | (val(*c) << (18 - 6 * i)));
            let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
            out.extend_from_slice(&bytes[..chunk.len() - 1]);
        }
        out
    }

    #[test]
    fn documented_users_and_devices_map() {
        let u = json!({"kind": "admin#directory#user", "id": "104857", "primaryEmail": "liz@example.com",
            "name": {"givenName": "Liz", "familyName": "Lemon", "fullName": "Liz Lemon"},
            "suspended": false, "archived": false,
            "organizations": [{"title": "Head Writer", "department": "Writing", "costCenter": "CC-30", "primary": true}],
            "externalIds": [{"value": "E-30", "type": "organization"}]});
        let r = user_record(&u).unwrap().unwrap();
        let names: Vec<&str> = r.attributes.iter().map(|a| a.name.as_str()).collect();
        assert!(
            names.contains(&"job_title") && names.contains(&"employee_id"),
            "{names:?}"
        );
        assert!(
            user_record(&json!({"id": "1", "primaryEmail": "x@example.com", "suspended": true}))
                .unwrap()
                .is_none()
        );
        let d = json!({"kind": "admin#directory#chromeosdevice", "deviceId": "d-9", "serialNumber": "5CD1234",
            "status": "ACTIVE", "osVersion": "119.0.6045.158", "model": "HP Chromebook 14",
            "annotatedUser": "liz@example.com"});
        let r = device_record(&d).unwrap().unwrap();
        assert_eq!(r.external_id, "d-9");
        assert!(
            device_record(&json!({"deviceId": "d-8", "status": "DEPROVISIONED"}))
                .unwrap()
                .is_none()
        );
    }
}
