//! The error responses every operation shares, added to the OpenAPI document
//! from the operation's shape rather than written on each handler.
//!
//! Which 4xx an operation can answer follows from what it takes: a bearer
//! credential can be missing or refused, a JSON body can be malformed, too
//! large or not JSON, a path id can name nothing, an `If-Match` can be stale.
//! The extractors in [`super::extract`] and [`super::error`] answer these the
//! same way everywhere, so the document states them the same way everywhere,
//! as references to shared responses. A handler's own annotation wins when it
//! documents a status itself (with a more specific description).

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::{ContentBuilder, Object, OpenApi, Ref, RefOr, ResponseBuilder, Type};

/// One shared error response: the status, its component name and what it
/// means for a client.
struct Shared {
    status: &'static str,
    name: &'static str,
    description: &'static str,
}

const BAD_REQUEST: Shared = Shared {
    status: "400",
    name: "BadRequest",
    description: "Malformed request: the body is not valid JSON (`malformed_json`, `field` gives line and column) or nests too deep (`too_deep`), a path or query parameter does not decode (`invalid_path`, `invalid_query`), a query parameter or header is invalid (`invalid_query`, `invalid_header`)",
};
const UNAUTHORIZED: Shared = Shared {
    status: "401",
    name: "Unauthorized",
    description: "No credential, or one that is unknown, revoked or expired (`unauthorized`); sent with `WWW-Authenticate: Bearer`",
};
const FORBIDDEN: Shared = Shared {
    status: "403",
    name: "Forbidden",
    description: "The credential's role may not do this (`forbidden`), or a device credential named another device (`device_mismatch`)",
};
const NOT_FOUND: Shared = Shared {
    status: "404",
    name: "NotFound",
    description: "Nothing has this id (`not_found`)",
};
const PRECONDITION_FAILED: Shared = Shared {
    status: "412",
    name: "PreconditionFailed",
    description: "`If-Match` names a version that is no longer current (`precondition_failed`): fetch the resource again and retry",
};
const PAYLOAD_TOO_LARGE: Shared = Shared {
    status: "413",
    name: "PayloadTooLarge",
    description: "The body is larger than the server accepts (`payload_too_large`)",
};
const UNSUPPORTED_MEDIA_TYPE: Shared = Shared {
    status: "415",
    name: "UnsupportedMediaType",
    description: "The body is not sent as JSON (`unsupported_media_type`)",
};
const UNPROCESSABLE: Shared = Shared {
    status: "422",
    name: "UnprocessableEntity",
    description: "A field is missing, has the wrong type or an invalid value (`invalid_field`, `invalid_rule`), or is past its limit (`too_long`, `too_deep`, `too_many`; for a rule preview, `too_costly` or `too_slow` when evaluating it passes the CEL budget or the deadline); `field` names it",
};

const ALL: [&Shared; 8] = [
    &BAD_REQUEST,
    &UNAUTHORIZED,
    &FORBIDDEN,
    &NOT_FOUND,
    &PRECONDITION_FAILED,
    &PAYLOAD_TOO_LARGE,
    &UNSUPPORTED_MEDIA_TYPE,
    &UNPROCESSABLE,
];

/// Operations that any valid credential of their scheme may call, so they
/// never answer 403: who am I, the session's own endpoints, and enrollment
/// (whose token is checked, not a role).
const ANY_CREDENTIAL: [&str; 5] = ["whoami", "me", "token", "sign_out", "enroll"];

/// Adds the shared error responses to every operation of `api` that can
/// answer them.
pub fn document_shared_errors(api: &mut OpenApi) {
    let components = api.components.get_or_insert_with(Default::default);
    for shared in ALL {
        let content = ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("ErrorBody")))
            .build();
        let mut response = ResponseBuilder::new()
            .description(shared.description)
            .content("application/json", content);
        if shared.status == UNAUTHORIZED.status {
            response = response.header(
                "WWW-Authenticate",
                HeaderBuilder::new()
                    .schema(Some(Object::with_type(Type::String)))
                    .description(Some("`Bearer`: the credential this API takes"))
                    .build(),
            );
        }
        components
            .responses
            .insert(shared.name.to_string(), RefOr::T(response.build()));
    }
    for item in api.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for op in operations.into_iter().flatten() {
            describe_blank_responses(op);
            for shared in applicable(op) {
                op.responses
                    .responses
                    .entry(shared.status.to_string())
                    .or_insert_with(|| {
                        RefOr::Ref(Ref::new(format!("#/components/responses/{}", shared.name)))
                    });
            }
        }
    }
}

/// OpenAPI requires every response to have a description; a handler that
/// documents only a status and a body gets the shared meaning of that
/// status, or its reason phrase.
fn describe_blank_responses(op: &mut Operation) {
    for (status, response) in op.responses.responses.iter_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        if !response.description.is_empty() {
            continue;
        }
        let shared = ALL.iter().find(|s| s.status == status);
        response.description = match shared {
            Some(s) => s.description.to_string(),
            None => status
                .parse::<u16>()
                .ok()
                .and_then(|c| axum::http::StatusCode::from_u16(c).ok())
                .and_then(|c| c.canonical_reason())
                .unwrap_or("Response")
                .to_string(),
        };
    }
}

/// The shared errors `op` can answer, from its security, body and
/// parameters.
fn applicable(op: &Operation) -> Vec<&'static Shared> {
    let mut out = Vec::new();
    let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
    if secured {
        out.push(&UNAUTHORIZED);
        let any = op
            .operation_id
            .as_deref()
            .is_some_and(|id| ANY_CREDENTIAL.contains(&id));
        if !any {
            out.push(&FORBIDDEN);
        }
    }
    let params: Vec<(&ParameterIn, &str)> = op
        .parameters
        .iter()
        .flatten()
        .filter_map(|p| match p {
            RefOr::T(p) => Some((&p.parameter_in, p.name.as_str())),
            RefOr::Ref(_) => None,
        })
        .collect();
    let has = |location: ParameterIn| params.iter().any(|(l, _)| **l == location);
    let if_match = params
        .iter()
        .any(|(l, n)| **l == ParameterIn::Header && n.eq_ignore_ascii_case("if-match"));
    if op.request_body.is_some() || !params.is_empty() {
        out.push(&BAD_REQUEST);
    }
    if op.request_body.is_some() {
        out.extend([&PAYLOAD_TOO_LARGE, &UNSUPPORTED_MEDIA_TYPE, &UNPROCESSABLE]);
    }
    if has(ParameterIn::Path) {
        out.push(&NOT_FOUND);
    }
    if if_match {
        out.push(&PRECONDITION_FAILED);
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r);
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    /// A reference to a schema utoipa never collected (a `no_recursion`
    /// in the wrong place) leaves clients and schemathesis with a hole.
    #[test]
    fn every_reference_resolves() {
        let doc: Value = serde_json::from_str(&super::super::openapi_json()).unwrap();
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(!all.is_empty());
        for r in all {
            let path = r.strip_prefix("#/").expect("a local reference");
            let target = path.split('/').fold(&doc, |v, part| &v[part]);
            assert!(!target.is_null(), "{r} is not defined");
        }
    }

    /// Every response has a description (OpenAPI requires one), and every
    /// operation that takes a credential documents 401.
    #[test]
    fn responses_are_described_and_401_documented() {
        let doc: Value = serde_json::from_str(&super::super::openapi_json()).unwrap();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for (status, resp) in op["responses"].as_object().unwrap() {
                    if resp.get("$ref").is_none() {
                        let d = resp["description"].as_str().unwrap_or("");
                        assert!(!d.is_empty(), "{method} {path} {status} has no description");
                    }
                }
                if op.get("security").is_some() {
                    assert!(
                        op["responses"].get("401").is_some(),
                        "{method} {path} does not document 401"
                    );
                }
            }
        }
    }
}
