//! A browser for the sign-in pages: cookies per origin, redirects one hop
//! at a time, and forms.

#![allow(
    clippy::unwrap_used,
    reason = "test harness: a panic fails the test that called it"
)]
// A process is observed from outside: waiting for it polls with real time.
#![allow(clippy::disallowed_methods)]

/// A browser for the sign-in pages: a cookie jar per origin, no automatic
/// redirects (each hop is visible to the test), and helpers for forms.
pub struct Browser {
    http: reqwest::Client,
    jar: std::sync::Mutex<std::collections::HashMap<String, Vec<(String, String)>>>,
}

/// One page or redirect a [`Browser`] got.
#[derive(Debug, Clone)]
pub struct Page {
    /// The URL requested.
    pub url: String,
    /// The status.
    pub status: u16,
    /// The absolute `Location`, for redirects.
    pub location: Option<String>,
    /// The body.
    pub body: String,
}

impl Page {
    /// The refusal reason Cohort's sign-in pages state in
    /// `<meta name="cohort-reason">`.
    pub fn reason(&self) -> Option<String> {
        let at = self.body.find(r#"name="cohort-reason" content=""#)?;
        let rest = &self.body[at + r#"name="cohort-reason" content=""#.len()..];
        rest.split('"').next().map(String::from)
    }

    /// The value of the first form input named `name`.
    pub fn input(&self, name: &str) -> Option<String> {
        let at = self.body.find(&format!(r#"name="{name}""#))?;
        let tag_start = self.body[..at].rfind('<')?;
        let tag_end = at + self.body[at..].find('>')?;
        let tag = &self.body[tag_start..tag_end];
        let v = tag.find("value=\"")?;
        tag[v + 7..].split('"').next().map(String::from)
    }

    /// The `action` of the first form.
    pub fn form_action(&self) -> Option<String> {
        let at = self.body.find("action=\"")?;
        self.body[at + 8..].split('"').next().map(String::from)
    }
}

fn origin(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or_default().to_string()
}

/// `location` resolved against `base`.
pub fn absolute(base: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_string();
    }
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    format!("{}{}", &base[..host_end], location)
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

impl Browser {
    /// A browser with no cookies.
    pub fn new() -> Browser {
        Browser {
            http: crate::http_client_builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            jar: Default::default(),
        }
    }

    /// The cookie `name` held for `url`'s origin.
    pub fn cookie(&self, url: &str, name: &str) -> Option<String> {
        let jar = self.jar.lock().unwrap();
        jar.get(&origin(url))?
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    /// Forgets the cookie `name` for `url`'s origin.
    pub fn drop_cookie(&self, url: &str, name: &str) {
        if let Some(c) = self.jar.lock().unwrap().get_mut(&origin(url)) {
            c.retain(|(k, _)| k != name);
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder, url: &str) -> Page {
        let cookies = self
            .jar
            .lock()
            .unwrap()
            .get(&origin(url))
            .map(|c| {
                c.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default();
        let req = if cookies.is_empty() {
            req
        } else {
            req.header("cookie", cookies)
        };
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        for v in resp.headers().get_all("set-cookie") {
            let v = v.to_str().unwrap_or_default();
            let first = v.split(';').next().unwrap_or_default();
            let Some((k, val)) = first.split_once('=') else {
                continue;
            };
            let delete = val.is_empty() || v.to_ascii_lowercase().contains("max-age=0");
            let mut jar = self.jar.lock().unwrap();
            let c = jar.entry(origin(url)).or_default();
            c.retain(|(name, _)| name != k.trim());
            if !delete {
                c.push((k.trim().to_string(), val.to_string()));
            }
        }
        let location = resp
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .map(|l| absolute(url, l));
        let body = resp.text().await.unwrap_or_default();
        Page {
            url: url.to_string(),
            status,
            location,
            body,
        }
    }

    /// GET `url` (one hop).
    pub async fn get(&self, url: &str) -> Page {
        self.send(self.http.get(url), url).await
    }

    /// POST a form to `url` (one hop).
    pub async fn post(&self, url: &str, form: &[(&str, &str)]) -> Page {
        let body = form
            .iter()
            .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let req = self
            .http
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        self.send(req, url).await
    }

    /// Follows redirects from `page` until a page that is not one, or
    /// until the next hop would go to a URL starting with `stop_before`.
    pub async fn follow(&self, mut page: Page, stop_before: Option<&str>) -> Page {
        for _ in 0..20 {
            let Some(next) = page.location.clone() else {
                return page;
            };
            if stop_before.is_some_and(|s| next.starts_with(s)) {
                return page;
            }
            page = self.get(&next).await;
        }
        panic!("more than 20 redirects from {}", page.url)
    }

    /// Cohort's identifier step: GET the form, POST `identifier`. Returns
    /// Cohort's answer (a redirect to the provider, the password form, or a
    /// refusal page).
    pub async fn start_sign_in(&self, cohort: &str, identifier: &str, return_to: &str) -> Page {
        let form = self
            .get(&format!(
                "{cohort}/sign-in?return_to={}",
                urlencode(return_to)
            ))
            .await;
        assert_eq!(form.status, 200, "{}", form.body);
        let csrf = form.input("csrf").expect("the form has a csrf field");
        self.post(
            &format!("{cohort}/sign-in"),
            &[
                ("identifier", identifier),
                ("csrf", &csrf),
                ("return_to", return_to),
            ],
        )
        .await
    }

    /// Signs in as `identifier` and, at the provider, as `login`: Cohort's
    /// identifier step, the provider's login and consent forms, and back.
    /// Returns Cohort's answer to the callback.
    pub async fn through_provider(&self, cohort: &str, identifier: &str, login: &str) -> Page {
        let started = self.start_sign_in(cohort, identifier, "").await;
        assert_eq!(started.status, 303, "{}", started.body);
        let mut page = self.follow(started, Some(cohort)).await;
        while !page
            .location
            .as_deref()
            .is_some_and(|l| l.starts_with(cohort))
        {
            assert_eq!(page.status, 200, "provider page: {}", page.body);
            let action = absolute(&page.url, &page.form_action().expect("a provider form"));
            page = if page.body.contains(r#"name="login""#) {
                self.post(
                    &action,
                    &[("prompt", "login"), ("login", login), ("password", "x")],
                )
                .await
            } else {
                self.post(&action, &[("prompt", "consent")]).await
            };
            page = self.follow(page, Some(cohort)).await;
        }
        let callback = page.location.expect("back to Cohort");
        assert!(callback.contains("/sign-in/callback?"), "{callback}");
        self.get(&callback).await
    }
}

/// Percent-encodes a form value.
pub fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
