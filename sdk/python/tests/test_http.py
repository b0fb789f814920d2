"""HTTP helpers: the request builder, every FetchError mapping path and its
conversions into import-error and connector-error.

Run from the repository root:
    python3 -m unittest discover -s sdk/python/tests -t sdk/python
"""

import unittest

from componentize_py_types import Err
from wit_world.exports import idp, importer
from wit_world.imports import host, types

from cohort_sdk import (
    BadResponse,
    DecodeError,
    HttpFailed,
    RateLimited,
    Unauthorized,
    UnexpectedStatus,
    connector_error,
    connector_errors,
    http,
    import_error,
    import_errors,
    invalid,
)
from cohort_sdk.testing import FakeHost

URL = "https://api.example.test/v1/people"


def fetch(fake_setup, text=False):
    """Fetch URL with the fake set up by fake_setup; the raised exception or the result."""
    with fake_setup(FakeHost()):
        try:
            r = http.request("GET", URL)
            return r.fetch_text() if text else r.fetch_json()
        except Exception as e:  # noqa: BLE001 - the test looks at it
            return e


class RequestBuilder(unittest.TestCase):
    def test_bearer(self):
        r = http.request("GET", URL).bearer("s3cret").build()
        self.assertEqual(r.headers, [("authorization", "Bearer s3cret")])
        self.assertIsInstance(r.method, host.Method_Get)
        self.assertEqual(r.body, b"")
        self.assertIsNone(r.timeout_ms)

    def test_basic_and_form_encode_for_the_wire(self):
        r = (
            http.request("POST", "https://example.test/token")
            .basic("key", "x")
            .form([("grant_type", "client_credentials"), ("scope", "a b")])
            .build()
        )
        self.assertEqual(
            r.headers,
            [
                ("authorization", "Basic a2V5Ong="),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
        )
        self.assertEqual(r.body, b"grant_type=client_credentials&scope=a%20b")
        self.assertIsInstance(r.method, host.Method_Post)

    def test_form_from_a_dict_encodes_everything_but_unreserved(self):
        r = http.request("POST", URL).form({"q": "a/b?c=d&é", "keep": "A-z_0.9~"}).build()
        self.assertEqual(r.body, b"q=a%2Fb%3Fc%3Dd%26%C3%A9&keep=A-z_0.9~")

    def test_json_body_is_compact_utf8_with_its_content_type(self):
        r = http.request("PATCH", URL).json({"name": "Zoë", "ids": [1, 2]}).timeout(500).build()
        self.assertEqual(r.body, '{"name":"Zoë","ids":[1,2]}'.encode())
        self.assertEqual(r.headers, [("content-type", "application/json")])
        self.assertEqual(r.timeout_ms, 500)
        self.assertIsInstance(r.method, host.Method_Patch)

    def test_json_that_cannot_be_encoded_is_a_decode_error(self):
        with self.assertRaises(DecodeError):
            http.request("POST", URL).json({"when": object()})

    def test_methods_by_name(self):
        self.assertIsInstance(http.request("delete", URL).method, host.Method_Delete)
        self.assertIsInstance(http.request("HEAD", URL).method, host.Method_Head)
        self.assertIsInstance(http.request("PUT", URL).method, host.Method_Put)
        self.assertEqual(http.request("PROPFIND", URL).method, host.Method_Other("PROPFIND"))
        self.assertEqual(http.method_name(host.Method_Other("propfind")), "PROPFIND")

    def test_fetch_json_asks_for_json_and_returns_body_and_response(self):
        with FakeHost().respond(URL, json={"people": [1]}, headers={"X-Total": "1"}) as fake:
            data, response = http.request("GET", URL).bearer("t").fetch_json()
        self.assertEqual(data, {"people": [1]})
        self.assertEqual(http.header(response, "x-total"), "1")
        self.assertEqual(http.header(response, "Content-Type"), "application/json")
        self.assertEqual(
            fake.requests[0].headers,
            [("authorization", "Bearer t"), ("accept", "application/json")],
        )

    def test_fetch_text(self):
        with FakeHost().respond(URL, text="id,email\n7,ada@example.com\n"):
            text, response = http.request("GET", URL).fetch_text()
        self.assertEqual(text.splitlines()[1], "7,ada@example.com")
        self.assertEqual(response.status, 200)


class StatusMapping(unittest.TestCase):
    def test_2xx_is_success(self):
        for status in (200, 201, 204, 299):
            result = fetch(lambda f: f.respond(URL, status, text="null"))
            self.assertEqual(result[0], None, status)

    def test_401_and_403_are_unauthorized(self):
        for status in (401, 403):
            e = fetch(lambda f: f.respond(URL, status, json={"error": "bad token"}))
            self.assertIsInstance(e, Unauthorized)
            self.assertEqual(e.status, status)
            self.assertEqual(str(e), "unauthorized (status %d)" % status)
            self.assertEqual(
                e.import_error(),
                importer.ImportError_Unauthorized("the source answered %d" % status),
            )
            self.assertEqual(
                e.connector_error(),
                idp.ConnectorError_BadResponse("unauthorized (status %d)" % status),
            )

    def test_429_and_503_are_rate_limited_with_retry_after(self):
        cases = [
            (429, {"retry-after": "12"}, 12),
            (503, {"Retry-After": " 7 "}, 7),
            (429, {"retry-after": "+5"}, 5),
            (503, {}, 30),
            (429, {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 30),
            (429, {"retry-after": "-1"}, 30),
            (429, {"retry-after": "1.5"}, 30),
            (429, {"retry-after": "4294967296"}, 30),
        ]
        for status, headers, seconds in cases:
            e = fetch(lambda f: f.respond(URL, status, text="slow down", headers=headers))
            self.assertIsInstance(e, RateLimited, (status, headers))
            self.assertEqual(e.seconds, seconds, headers)
            self.assertEqual(e.import_error(), importer.ImportError_RateLimited(seconds))
            self.assertEqual(
                e.connector_error(),
                idp.ConnectorError_BadResponse("rate limited; retry after %d s" % seconds),
            )

    def test_other_statuses_carry_up_to_200_bytes_of_body(self):
        e = fetch(lambda f: f.respond(URL, 500, text="x" * 300))
        self.assertIsInstance(e, UnexpectedStatus)
        self.assertEqual((e.status, e.body), (500, "x" * 200))
        self.assertEqual(
            e.import_error(), importer.ImportError_BadResponse("status 500: " + "x" * 200)
        )
        self.assertEqual(
            e.connector_error(),
            idp.ConnectorError_BadResponse("unexpected status 500: " + "x" * 200),
        )
        for status in (301, 400, 404, 502):
            self.assertIsInstance(fetch(lambda f: f.respond(URL, status)), UnexpectedStatus)

    def test_a_character_cut_at_200_bytes_is_replaced(self):
        e = fetch(lambda f: f.respond(URL, 404, body=b"a" * 199 + "é".encode()))
        self.assertEqual(e.body, "a" * 199 + "\ufffd")

    def test_undecodable_json_is_a_decode_error(self):
        for body in (b"<html>", b"", b'{"a": ', b"\xff\xfe"):
            e = fetch(lambda f: f.respond(URL, 200, body=body))
            self.assertIsInstance(e, DecodeError, body)
            self.assertTrue(str(e).startswith("unreadable response: "))
            self.assertEqual(e.import_error(), importer.ImportError_BadResponse(e.message))
            self.assertEqual(e.connector_error(), idp.ConnectorError_BadResponse(str(e)))

    def test_fetch_text_refuses_a_body_that_is_not_utf8(self):
        e = fetch(lambda f: f.respond(URL, 200, body=b"\xff"), text=True)
        self.assertIsInstance(e, DecodeError)
        self.assertIn("the body is not UTF-8", e.message)

    def test_fetch_text_maps_statuses_too(self):
        self.assertIsInstance(fetch(lambda f: f.respond(URL, 403), text=True), Unauthorized)

    def test_no_response_is_an_http_error(self):
        e = fetch(lambda f: f)  # nothing recorded: the host refuses the host
        self.assertIsInstance(e, HttpFailed)
        self.assertEqual(e.error, host.HttpError_HostNotAllowed("no fake response for " + URL))
        self.assertEqual(e.import_error(), importer.ImportError_Http(e.error))
        self.assertEqual(e.connector_error(), idp.ConnectorError_Http(e.error))
        self.assertTrue(str(e).startswith("http request failed: "))

    def test_recorded_transport_failures(self):
        e = fetch(lambda f: f.fail(URL, "timeout"))
        self.assertEqual(e.error, host.HttpError_Timeout())
        e = fetch(lambda f: f.fail(URL, "connection", "refused"))
        self.assertEqual(e.import_error(), importer.ImportError_Http(host.HttpError_Connection("refused")))
        e = fetch(lambda f: f.fail(URL, host.HttpError_ResponseTooLarge(9)))
        self.assertEqual(e.error, host.HttpError_ResponseTooLarge(9))

    def test_send_returns_any_status(self):
        with FakeHost().respond(URL, 500, text="boom"):
            self.assertEqual(http.request("GET", URL).send().status, 500)


class NextLink(unittest.TestCase):
    def link(self, value):
        headers = [] if value is None else [("link", value)]
        return http.next_link(host.Response(status=200, headers=headers, body=b""))

    def test_next_links(self):
        self.assertEqual(
            self.link('<https://a.test/p?page=1>; rel="prev", <https://a.test/p?page=3>; rel="next"'),
            "https://a.test/p?page=3",
        )
        self.assertEqual(self.link("<https://a.test/2>; rel=next"), "https://a.test/2")
        self.assertEqual(self.link('<https://a.test/2>; type="x"; REL="NEXT"'), "https://a.test/2")
        self.assertIsNone(self.link('<https://a.test/1>; rel="prev"'))
        self.assertIsNone(self.link("https://a.test/2; rel=next"))
        self.assertIsNone(self.link("<https://a.test/2>"))
        self.assertIsNone(self.link(None))

    def test_header_names_are_case_insensitive(self):
        response = host.Response(status=200, headers=[("Link", "<https://a.test/2>; rel=next")], body=b"")
        self.assertEqual(http.next_link(response), "https://a.test/2")


class Under(unittest.TestCase):
    def test_only_the_api_and_below(self):
        base = "https://hr.example.com/api/"
        self.assertTrue(http.under(base, "https://hr.example.com/api"))
        self.assertTrue(http.under(base, "https://hr.example.com/api/people?page=2"))
        self.assertTrue(http.under(base, "https://hr.example.com/api?page=2"))
        self.assertFalse(http.under(base, "https://hr.example.com/apiary/people"))
        self.assertFalse(http.under(base, "https://hr.example.com.evil.test/api/people"))
        self.assertFalse(http.under(base, "http://hr.example.com/api/people"))
        self.assertFalse(http.under(base, "https://hr.example.com/other"))


class Conversions(unittest.TestCase):
    def test_import_error_of_each_kind(self):
        missing = types.ConfigError_Missing("api_token")
        self.assertEqual(import_error(Err(missing)), importer.ImportError_Config(missing))
        self.assertEqual(import_error(BadResponse("no people")), importer.ImportError_BadResponse("no people"))
        other = importer.ImportError_Other("x")
        self.assertEqual(import_error(Err(other)), other)
        with self.assertRaises(TypeError):
            import_error(ValueError("x"))

    def test_connector_error_of_each_kind(self):
        problem = invalid("issuer", "no query")
        self.assertEqual(connector_error(Err(problem)), idp.ConnectorError_Config(problem))
        self.assertEqual(connector_error(BadResponse("no sub")), idp.ConnectorError_BadResponse("no sub"))

    def test_import_errors_decorator(self):
        @import_errors
        def fetch_page(fail):
            raise fail

        cases = [
            (RateLimited(5), importer.ImportError_RateLimited(5)),
            (Err(types.ConfigError_Missing("a")), importer.ImportError_Config(types.ConfigError_Missing("a"))),
            (BadResponse("b"), importer.ImportError_BadResponse("b")),
            (Err(importer.ImportError_Other("c")), importer.ImportError_Other("c")),
        ]
        for raised, expected in cases:
            with self.assertRaises(Err) as caught:
                fetch_page(raised)
            self.assertEqual(caught.exception.value, expected)
        with self.assertRaises(KeyError):  # a bug stays a bug (a trap in the component)
            fetch_page(KeyError("id"))

    def test_connector_errors_decorator(self):
        @connector_errors
        def endpoints(fail):
            raise fail

        with self.assertRaises(Err) as caught:
            endpoints(HttpFailed(host.HttpError_Timeout()))
        self.assertEqual(caught.exception.value, idp.ConnectorError_Http(host.HttpError_Timeout()))
        with self.assertRaises(Err) as caught:
            endpoints(Err(invalid("issuer", "x")))
        self.assertEqual(caught.exception.value, idp.ConnectorError_Config(invalid("issuer", "x")))

    def test_decorated_functions_return_normally(self):
        self.assertEqual(import_errors(lambda: 3)(), 3)


if __name__ == "__main__":
    unittest.main()
