//! The path ids and the paging query that most resource handlers take, as
//! extractors. Each handler used to parse its ids and its `limit`/`cursor`
//! itself, with the same lines and the same OpenAPI parameters copied into
//! every list; here they are written once, so that a malformed id is the same
//! 404 and a bad `limit` the same 400 (naming the parameter) everywhere.

use std::marker::PhantomData;

use axum::extract::{FromRequestParts, Path};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use utoipa::IntoParams;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::{ObjectBuilder, Required, Type};
use uuid::Uuid;

use super::error::ApiError;
use super::extract::query_pairs;
use crate::page::{MAX_LIMIT, PageRequest};

/// What a path id names, for the 404 of an id that cannot name anything.
pub trait Kind {
    /// The resource, as the message says it: "`<NAME>` <id> not found".
    const NAME: &'static str;
}

/// The [`Kind`]s of the ids in paths.
pub mod kind {
    use super::Kind;

    macro_rules! kinds {
        ($($name:ident => $text:literal),* $(,)?) => {$(
            #[doc = concat!("An id of a ", $text, ".")]
            pub enum $name {}
            impl Kind for $name {
                const NAME: &'static str = $text;
            }
        )*};
    }

    kinds! {
        User => "user",
        Device => "device",
        Group => "group",
        Subject => "subject",
        Resource => "resource",
        Idp => "identity provider",
        EnrollmentToken => "device_enrollment_token",
        ImportRun => "import run",
        ImportSchedule => "import schedule",
        Recompute => "recompute",
    }
}

/// A malformed id is a 404 for that resource, since no resource can have it
/// (not a 400: to the caller it is one more id that names nothing).
pub fn parse_id<K: Kind>(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{} {raw} not found", K::NAME),
        )
    })
}

/// The one id of a route such as `/users/{id}`, of kind `K`.
pub struct IdPath<K>(pub Uuid, pub PhantomData<K>);

impl<K: Kind, S: Send + Sync> FromRequestParts<S> for IdPath<K> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        parse_id::<K>(&raw)
            .map(|id| IdPath(id, PhantomData))
            .map_err(IntoResponse::into_response)
    }
}

/// The two ids of a route such as `/users/{id}/devices/{device_id}`, of
/// kinds `A` and `B`; the first malformed one is the 404.
pub struct IdPair<A, B>(pub Uuid, pub Uuid, pub PhantomData<(A, B)>);

impl<A: Kind, B: Kind, S: Send + Sync> FromRequestParts<S> for IdPair<A, B> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path((a, b)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let pair =
            || Ok::<_, ApiError>(IdPair(parse_id::<A>(&a)?, parse_id::<B>(&b)?, PhantomData));
        pair().map_err(IntoResponse::into_response)
    }
}

/// The query of a list: its page (`limit` and `cursor`, checked) and every
/// parameter as a name/value pair, in order, for the list's own filters.
/// Lists document their paging with `params(Paging, ...)`; the three whose
/// `cursor` the committed document leaves undescribed (a user's devices, a
/// device's users, the audit log) still spell both parameters out, so that
/// the document stays as it is.
pub struct Paging {
    /// Where the page starts and how long it is.
    pub page: PageRequest,
    /// The whole query, paging parameters included.
    pub pairs: Vec<(String, String)>,
}

impl Paging {
    /// The value of the first parameter called `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        first(&self.pairs, name)
    }
}

fn first<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find_map(|(k, v)| (k == name).then_some(v.as_str()))
}

impl<S: Send + Sync> FromRequestParts<S> for Paging {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let pairs = query_pairs(parts.uri.query())?;
        let page = PageRequest::parse(first(&pairs, "limit"), first(&pairs, "cursor"))?;
        Ok(Paging { page, pairs })
    }
}

/// The description of `limit` in the OpenAPI document.
const LIMIT_DOC: &str = "Items per page, 1-500 (default 50)";

impl IntoParams for Paging {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let limit = ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(1))
            .maximum(Some(MAX_LIMIT as u32));
        let cursor = ObjectBuilder::new().schema_type(Type::String);
        vec![
            ParameterBuilder::new()
                .name("limit")
                .parameter_in(ParameterIn::Query)
                .description(Some(LIMIT_DOC))
                .required(Required::False)
                .schema(Some(limit))
                .build(),
            ParameterBuilder::new()
                .name("cursor")
                .parameter_in(ParameterIn::Query)
                .description(Some("`next_cursor` of the previous page"))
                .required(Required::False)
                .schema(Some(cursor))
                .build(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;

    async fn paging(uri: &str) -> Result<Paging, ApiError> {
        let (mut parts, ()) = Request::get(uri).body(()).unwrap().into_parts();
        Paging::from_request_parts(&mut parts, &()).await
    }

    #[tokio::test]
    async fn paging_reads_limit_cursor_and_keeps_the_filters() {
        let p = paging("/x?state=active&limit=7&cursor=abc&state=staged")
            .await
            .unwrap();
        assert_eq!((p.page.limit, p.page.cursor.as_deref()), (7, Some("abc")));
        assert_eq!(p.get("state"), Some("active"));
        assert_eq!(p.pairs.len(), 4);
        let p = paging("/x").await.unwrap();
        assert_eq!((p.page.limit, p.page.cursor), (50, None));
    }

    #[tokio::test]
    async fn paging_refuses_a_limit_out_of_range_naming_it() {
        for q in ["limit=0", "limit=501", "limit=x", "limit=-1"] {
            let e = paging(&format!("/x?{q}")).await.err().unwrap();
            assert_eq!(
                (e.status(), e.field()),
                (StatusCode::BAD_REQUEST, Some("limit")),
                "{q}"
            );
        }
        assert!(paging("/x?limit=500").await.is_ok());
    }

    #[test]
    fn a_malformed_id_is_a_404_naming_the_kind() {
        let e = parse_id::<kind::Idp>("nope").unwrap_err();
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
        assert_eq!(e.code(), "not_found");
        assert_eq!(e.message(), "identity provider nope not found");
        let id = Uuid::now_v7();
        assert_eq!(parse_id::<kind::User>(&id.to_string()).unwrap(), id);
    }
}
