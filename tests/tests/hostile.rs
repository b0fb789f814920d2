//! Hostile input against the real binary: deep nesting, long strings, huge
//! numbers and invalid UTF-8 at every parser that takes outside input. Each
//! request is refused with the 4xx and the stable code that names the limit,
//! nothing is written, and the server keeps answering. The limits
//! themselves are in `host/src/limits`.

#![allow(
    clippy::unwrap_used,
    reason = "test code, helpers included: a panic is a test failure"
)]
// A hostile input is refused within a bound of real time, which is what is measured.
#![allow(clippy::disallowed_methods)]

use cohort_tests::{Api, Server};
use reqwest::Method;
use serde_json::{Value, json};

/// Far past every nesting limit: what used to overflow a worker's stack.
const DEEP: usize = 10_000;

fn nested(open: &str, middle: &str, close: &str, n: usize) -> String {
    format!("{}{middle}{}", open.repeat(n), close.repeat(n))
}

/// Percent-encodes everything but unreserved characters.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn count(api: &Api, path: &str) -> usize {
    let r = api.get(path).await.expect(200);
    assert!(
        r.body["next_cursor"].is_null(),
        "{path} has more than a page"
    );
    r.body["items"].as_array().expect("items").len()
}

/// Users, groups and audit events: what a refused request must not change.
async fn counts(api: &Api) -> [usize; 3] {
    [
        count(api, "/api/v1/users?limit=500").await,
        count(api, "/api/v1/groups?limit=500").await,
        count(api, "/api/v1/audit?limit=500").await,
    ]
}

async fn healthy(api: &Api) {
    api.get("/healthz").await.expect(200);
}

/// A SCIM error body with `status` and `scimType`; returns its detail.
#[track_caller]
fn scim_error(r: &cohort_tests::Resp, status: u16, scim_type: &str) -> String {
    assert_eq!(r.status.as_u16(), status, "{}", r.body);
    assert_eq!(
        r.body["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error",
        "{}",
        r.body
    );
    assert_eq!(r.body["status"], status.to_string(), "{}", r.body);
    assert_eq!(r.body["scimType"], scim_type, "{}", r.body);
    r.body["detail"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn hostile_requests_are_refused_and_the_server_keeps_serving() {
    let server = Server::start_with_plugins(&[]);
    let admin = server.admin();
    let scim = server.client(Some(&admin.create_key("okta", "scim").await));
    let ada = scim
        .post(
            "/scim/v2/Users",
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                   "userName": "ada", "emails": [{"value": "ada@example.com", "type": "work"}]}),
        )
        .await
        .expect(201)
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let dept = admin
        .dynamic_group("Sales", "user", json!({"conditions": [{"attribute": "department", "operator": "equals", "values": ["Sales"]}]}))
        .await;
    let before = counts(&admin).await;
    let ada_before = scim.get(&format!("/scim/v2/Users/{ada}")).await.expect(200);

    // SCIM filters: thousands of parentheses, `not (` and brackets.
    for filter in [
        nested("(", "userName eq \"ada\"", ")", 3000),
        nested("not (", "userName pr", ")", 1000),
        nested("emails[", "type eq \"work\"", "]", 1000),
    ] {
        let r = scim
            .get(&format!("/scim/v2/Users?filter={}", encode(&filter)))
            .await;
        let detail = scim_error(&r, 400, "invalidFilter");
        assert!(detail.contains("32 is the limit"), "{detail}");
        healthy(&admin).await;
    }
    // Past the filter's length limit, through POST .search (no URI limit).
    let r = scim
        .post(
            "/scim/v2/Users/.search",
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
                   "filter": nested("(", "userName eq \"ada\"", ")", DEEP)}),
        )
        .await;
    let detail = scim_error(&r, 400, "invalidFilter");
    assert!(detail.contains("8192 is the limit"), "{detail}");
    // Invalid UTF-8 in the filter.
    let r = scim
        .get("/scim/v2/Users?filter=userName%20eq%20%22%FF%22")
        .await;
    let detail = scim_error(&r, 400, "invalidFilter");
    assert!(detail.contains("filter"), "{detail}");

    // A SCIM PATCH path with a deep filter, alone and inside Bulk.
    let deep_path = format!(
        "emails[{}].value",
        nested("(", "type eq \"work\"", ")", 3000)
    );
    let patch = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                       "Operations": [{"op": "replace", "path": deep_path, "value": "x@evil.example"}]});
    let r = scim
        .patch(&format!("/scim/v2/Users/{ada}"), patch.clone())
        .await;
    let detail = scim_error(&r, 400, "invalidPath");
    assert!(detail.contains("32 is the limit"), "{detail}");
    let bulk = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
                      "Operations": [{"method": "PATCH", "path": format!("/Users/{ada}"), "data": patch}]});
    let r = scim.post("/scim/v2/Bulk", bulk).await.expect(200);
    assert_eq!(r.body["Operations"][0]["status"], "400", "{}", r.body);
    assert_eq!(
        r.body["Operations"][0]["response"]["scimType"],
        "invalidPath"
    );
    // A deep SCIM body, plain and in Bulk.
    for path in ["/scim/v2/Users", "/scim/v2/Bulk"] {
        let r = scim
            .send_raw(
                Method::POST,
                path,
                Some("application/scim+json"),
                nested("{\"a\":", "1", "}", DEEP).into_bytes(),
            )
            .await;
        let detail = scim_error(&r, 400, "invalidSyntax");
        assert!(detail.contains("64 is the limit"), "{detail}");
    }
    let ada_after = scim.get(&format!("/scim/v2/Users/{ada}")).await.expect(200);
    assert_eq!(ada_after.body, ada_before.body, "the PATCH wrote nothing");

    // Deep JSON bodies on the admin API.
    for (path, body) in [
        ("/api/v1/users", "[".repeat(DEEP)),
        (
            "/api/v1/groups/preview",
            format!(
                "{{\"subject\": \"user\", \"rule\": {}}}",
                nested("{\"any\": [", "{}", "]}", DEEP)
            ),
        ),
        (
            "/api/v1/groups",
            format!(
                "{{\"name\": \"deep\", \"subject\": \"user\", \"type\": \"dynamic\", \"rule\": {}}}",
                nested("{\"conditions\": [{\"devices\": ", "{}", "}]}", DEEP)
            ),
        ),
    ] {
        let r = admin
            .send_raw(
                Method::POST,
                path,
                Some("application/json"),
                body.into_bytes(),
            )
            .await
            .expect(400);
        assert_eq!(r.code(), "too_deep", "{path}: {}", r.body);
        assert!(
            r.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("64 is the limit")
        );
        assert!(r.field().starts_with("line 1 column"), "{}", r.body);
    }

    // Rule JSON within the body limit but deeper than the rule language,
    // and more conditions than a rule may have.
    let mut deep_rule = json!({"conditions": [{"attribute": "department", "operator": "exists"}]});
    for _ in 0..15 {
        deep_rule = json!({"conditions": [{"devices": deep_rule}]});
    }
    let many =
        json!({"conditions": vec![json!({"attribute": "department", "operator": "exists"}); 1001]});
    for path in ["/api/v1/groups/preview", "/api/v1/groups"] {
        let body = |rule: &Value| json!({"name": "hostile", "subject": "user", "type": "dynamic", "rule": rule});
        let preview = |rule: &Value| json!({"subject": "user", "rule": rule});
        let make = if path.ends_with("preview") {
            preview
        } else {
            body
        };
        let r = admin.post(path, make(&deep_rule)).await.expect(422);
        assert_eq!(r.code(), "invalid_rule", "{}", r.body);
        assert!(
            r.field().starts_with("rule/conditions/0/devices"),
            "{}",
            r.body
        );
        let r = admin.post(path, make(&many)).await.expect(422);
        assert_eq!(r.code(), "too_many", "{}", r.body);
        assert!(
            r.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("the limit is 1000")
        );
        // Deep and long CEL, as the whole rule and as a condition.
        for (source, code) in [
            (
                nested("(", "user.department == 'Sales'", ")", 100),
                "too_deep",
            ),
            (format!("{}true", "!".repeat(200)), "too_deep"),
            (nested("(", "true", ")", DEEP), "too_long"),
            (
                format!("user.department == '{}'", "a".repeat(100_000)),
                "too_long",
            ),
        ] {
            for rule in [
                json!({"expression": source}),
                json!({"conditions": [{"expression": source}]}),
            ] {
                let r = admin.post(path, make(&rule)).await.expect(422);
                assert_eq!(r.code(), code, "{}", r.body);
                assert!(r.field().ends_with("expression"), "{}", r.body);
                assert!(
                    r.body["error"]["message"]
                        .as_str()
                        .unwrap()
                        .contains("the limit is"),
                    "{}",
                    r.body
                );
            }
        }
    }
    // The same CEL in a group update leaves the group as it was.
    let group_before = admin
        .get(&format!("/api/v1/groups/{dept}"))
        .await
        .expect(200);
    let r = admin
        .patch(
            &format!("/api/v1/groups/{dept}"),
            json!({"rule": {"expression": nested("(", "true", ")", 100)}}),
        )
        .await
        .expect(422);
    assert_eq!(r.code(), "too_deep", "{}", r.body);
    let group_after = admin
        .get(&format!("/api/v1/groups/{dept}"))
        .await
        .expect(200);
    assert_eq!(group_after.body, group_before.body);

    // A deep routing condition, and too many domains.
    let routing_before = admin.get("/api/v1/sign-in/routing").await.expect(200);
    let route = |condition: Value| {
        json!({"rules": [{"name": "hostile", "condition": condition, "target": {"type": "local"}}],
               "default": {"type": "local"}})
    };
    let r = admin
        .put_json(
            "/api/v1/sign-in/routing",
            route(json!({"expression": nested("(", "user.department == 'Sales'", ")", 100)})),
        )
        .await
        .expect(422);
    assert_eq!(r.code(), "too_deep", "{}", r.body);
    assert_eq!(r.field(), "rules/0/condition/expression");
    let domains: Vec<String> = (0..1001).map(|i| format!("d{i}.example.com")).collect();
    let r = admin
        .put_json(
            "/api/v1/sign-in/routing",
            route(json!({"email_domain": domains})),
        )
        .await
        .expect(422);
    assert_eq!(r.code(), "too_many", "{}", r.body);
    let routing_after = admin.get("/api/v1/sign-in/routing").await.expect(200);
    assert_eq!(routing_after.body, routing_before.body);

    // Huge numbers.
    for number in ["1e999999", "-1e999999"] {
        let r = admin
            .send_raw(
                Method::POST,
                "/api/v1/users",
                Some("application/json"),
                format!("{{\"username\": \"big\", \"email\": \"big@example.com\", \"custom_attributes\": {{\"level\": {number}}}}}").into_bytes(),
            )
            .await
            .expect(400);
        assert_eq!(r.code(), "malformed_json", "{}", r.body);
    }
    let r = admin
        .get("/api/v1/users?limit=12345678901234567890")
        .await
        .expect(400);
    assert_eq!(r.field(), "limit", "{}", r.body);

    // Long query strings and invalid UTF-8 in them.
    let long = "a".repeat(40_000);
    let r = admin
        .get(&format!("/api/v1/users?department={long}"))
        .await
        .expect(414);
    assert_eq!(r.code(), "uri_too_long", "{}", r.body);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("32768 is the limit")
    );
    let r = scim.get(&format!("/scim/v2/Users?filter={long}")).await;
    assert_eq!(r.status.as_u16(), 414, "{}", r.body);
    assert_eq!(
        r.body["status"], "414",
        "SCIM paths answer in SCIM: {}",
        r.body
    );
    let r = admin.get("/api/v1/users?department=%FF").await.expect(400);
    assert_eq!((r.code(), r.field()), ("invalid_query", "department"));
    let r = admin.get("/api/v1/audit?actor=%C3%28").await.expect(400);
    assert_eq!((r.code(), r.field()), ("invalid_query", "actor"));
    let r = admin.get("/api/v1/users/%FF%FE").await.expect(400);
    assert_eq!((r.code(), r.field()), ("invalid_path", "path"));

    healthy(&admin).await;
    assert_eq!(counts(&admin).await, before, "nothing was written");
    // And the server still does real work.
    admin.create_user("still-here").await;
    assert!(
        !server.log().contains("overflowed its stack"),
        "{}",
        server.log()
    );
}

#[tokio::test]
async fn hostile_group_reference_chains_stop_at_the_limit() {
    let server = Server::start_with_plugins(&[]);
    let admin = server.admin();
    let mut previous = admin
        .dynamic_group(
            "chain-0",
            "user",
            json!({"conditions": [{"attribute": "department", "operator": "exists"}]}),
        )
        .await;
    // 32 links are allowed.
    for i in 1..=32 {
        previous = admin
            .dynamic_group(
                &format!("chain-{i}"),
                "user",
                json!({"conditions": [{"member_of": previous}]}),
            )
            .await;
    }
    let extra = admin
        .dynamic_group(
            "chain-base",
            "user",
            json!({"conditions": [{"attribute": "department", "operator": "exists"}]}),
        )
        .await;
    let before = counts(&admin).await;
    for rule in [
        json!({"conditions": [{"member_of": previous}]}),
        json!({"expression": format!("in_group('{previous}')")}),
    ] {
        let r = admin
            .post(
                "/api/v1/groups",
                json!({"name": "chain-33", "subject": "user", "type": "dynamic", "rule": rule}),
            )
            .await
            .expect(422);
        assert_eq!(r.code(), "too_deep", "{}", r.body);
        assert!(
            r.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("the limit is 32"),
            "{}",
            r.body
        );
    }
    // Lengthening the chain from its head is refused too.
    let head = admin.get("/api/v1/groups?limit=500").await.expect(200).body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "chain-0")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = admin
        .patch(
            &format!("/api/v1/groups/{head}"),
            json!({"rule": {"conditions": [{"member_of": extra}]}}),
        )
        .await
        .expect(422);
    assert_eq!(r.code(), "too_deep", "{}", r.body);
    assert_eq!(counts(&admin).await, before, "nothing was written");
    healthy(&admin).await;
}

/// A SCIM list renders every user and runs its filter over each: with a
/// filter at its limits that is seconds of CPU. Lists used to run on the
/// request threads, so a few at once held up every other request, /healthz
/// included, until they finished. They must leave the server answering.
#[tokio::test]
async fn hostile_scim_lists_at_the_limits_do_not_stall_the_server() {
    let server = Server::start();
    let admin = server.admin();
    let scim = server.client(Some(&admin.create_key("okta", "scim").await));
    for batch in 0..2 {
        let ops: Vec<Value> = (0..1000)
            .map(|i| {
                let name = format!("scan{batch}-{i}@example.com");
                json!({"method": "POST", "path": "/Users", "bulkId": format!("u{batch}-{i}"),
                       "data": {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                                "userName": name, "emails": [{"value": name, "primary": true}]}})
            })
            .collect();
        let r = scim
            .post(
                "/scim/v2/Bulk",
                json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
                       "Operations": ops}),
            )
            .await
            .expect(200);
        assert!(
            r.body["Operations"]
                .as_array()
                .unwrap()
                .iter()
                .all(|op| op["status"] == "201"),
            "{}",
            r.body
        );
    }
    // As many comparisons as a filter may have, matching nobody.
    let filter = vec!["userName co \"no-such-user\""; 256].join(" or ");
    let path = format!("/scim/v2/Users?count=1&filter={}", encode(&filter));
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let lists: Vec<_> = (0..2 * cores)
        .map(|_| {
            let (scim, path) = (scim.clone(), path.clone());
            tokio::spawn(async move {
                let start = std::time::Instant::now();
                let r = scim.get(&path).await.expect(200);
                assert_eq!(r.body["totalResults"], 0, "{}", r.body);
                start.elapsed()
            })
        })
        .collect();
    let mut slowest_ping = std::time::Duration::ZERO;
    let mut pings = 0;
    while lists.iter().any(|l| !l.is_finished()) {
        let start = std::time::Instant::now();
        healthy(&admin).await;
        slowest_ping = slowest_ping.max(start.elapsed());
        pings += 1;
    }
    let mut shortest_list = std::time::Duration::MAX;
    for l in lists {
        shortest_list = shortest_list.min(l.await.unwrap());
    }
    assert!(pings > 1, "the lists finished before /healthz was asked");
    assert!(
        slowest_ping * 4 < shortest_list,
        "/healthz took {slowest_ping:?} while SCIM lists ran (the quickest took {shortest_list:?})"
    );
}

#[tokio::test]
async fn hostile_csv_export_neutralises_formulas() {
    let server = Server::start();
    let admin = server.admin();
    let formula = "=HYPERLINK(\"http://evil.example\")";
    // The request id comes from the client and lands in its own column.
    let r = admin
        .send(
            Method::POST,
            "/api/v1/users",
            Some(
                &json!({"username": "mallory", "email": "mallory@example.com",
                          "department": formula}),
            ),
            &[("x-request-id", formula), ("user-agent", "  @SUM(1+1)")],
        )
        .await
        .expect(201);
    let id = r.body["id"].as_str().unwrap();
    let events = admin
        .get(&format!(
            "/api/v1/audit?resource_type=user&resource_id={id}"
        ))
        .await
        .expect(200);
    assert_eq!(
        events.body["items"][0]["request_id"], formula,
        "stored as sent"
    );

    let (status, csv) = admin.get_text("/api/v1/audit/export?format=csv").await;
    assert_eq!(status.as_u16(), 200);
    let line = csv
        .split("\r\n")
        .find(|l| l.contains(id) && l.contains("user.create"))
        .unwrap_or_else(|| panic!("no event for {id}:\n{csv}"));
    let cells = split_csv(line);
    let header = split_csv(csv.split("\r\n").next().unwrap_or_default());
    assert_eq!(cells.len(), header.len(), "{line}");
    let request_id = header
        .iter()
        .position(|h| h == "request_id")
        .expect("a request_id column");
    assert_eq!(cells[request_id], format!("'{formula}"), "{line}");
    // The client's address and user agent have columns of their own, and
    // the user agent is the client's to choose.
    let column = |name: &str| header.iter().position(|h| h == name).expect(name);
    assert_eq!(cells[column("client_address")], "127.0.0.1", "{line}");
    assert_eq!(cells[column("user_agent")], "'@SUM(1+1)", "{line}");
    for cell in &cells {
        assert!(
            !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
            "{cell:?} in {line}"
        );
    }
    // The attribute values are inside the JSON column, which starts with `{`.
    assert!(
        cells[8].starts_with('{') && cells[8].contains("HYPERLINK"),
        "{line}"
    );
    assert!(
        line.contains("\"'=HYPERLINK(\"\"http://evil.example\"\")\""),
        "{line}"
    );
}

/// Splits one RFC 4180 record into its cells.
fn split_csv(line: &str) -> Vec<String> {
    let mut cells = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                cells.last_mut().unwrap().push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => cells.push(String::new()),
            (c, _) => cells.last_mut().unwrap().push(c),
        }
    }
    cells
}
