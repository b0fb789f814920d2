"""FakeHost and the test harness: recorded responses, unrecorded URLs, the
clock, captured requests and log lines, installation.

Run from the repository root:
    python3 -m unittest discover -s sdk/python/tests -t sdk/python
"""

import unittest

from componentize_py_types import Err
from wit_world.imports import host, types

from cohort_sdk import http, log, now_millis
from cohort_sdk.testing import ALL_WORLDS, FakeHost, config_entries, load_bindings

from . import BINDINGS, WIT

URL = "https://api.example.test/v1/people"


class Fake(unittest.TestCase):
    def test_an_unrecorded_url_is_a_host_not_allowed_error(self):
        with FakeHost().respond(URL, json={}) as fake:
            request = http.request("GET", URL + "?page=2").build()
            with self.assertRaises(Err) as caught:
                host.send_http(request)
        self.assertEqual(
            caught.exception.value,
            host.HttpError_HostNotAllowed("no fake response for " + URL + "?page=2"),
        )
        self.assertEqual([r.url for r in fake.requests], [URL + "?page=2"])

    def test_responses_are_per_method_and_url_and_later_entries_win(self):
        fake = (
            FakeHost()
            .respond(URL, json={"n": 1})
            .respond(URL, json={"n": 2})
            .respond(URL, 201, json={"created": True}, method="post")
        )
        with fake:
            self.assertEqual(http.request("GET", URL).fetch_json()[0], {"n": 2})
            data, response = http.request("POST", URL).json({}).fetch_json()
            self.assertEqual((data, response.status), ({"created": True}, 201))
            with self.assertRaises(Err):
                host.send_http(http.request("GET", "https://other.test/").build())

    def test_a_method_filter_does_not_answer_other_methods(self):
        with FakeHost().respond(URL, 204, method="DELETE"):
            with self.assertRaises(Err):
                host.send_http(http.request("GET", URL).build())
            self.assertEqual(http.request("DELETE", URL).send().status, 204)

    def test_response_headers_and_bodies(self):
        fake = (
            FakeHost()
            .respond(URL, json=[1], headers={"Link": "<%s?p=2>; rel=next" % URL})
            .respond(URL + "/csv", text="a,b", headers=[("Content-Type", "text/csv")])
            .respond(URL + "/raw", 200, body=b"\x00\x01")
            .respond(URL + "/empty", 204)
        )
        with fake:
            _, response = http.request("GET", URL).fetch_json()
            self.assertEqual(
                response.headers,
                [("content-type", "application/json"), ("link", "<%s?p=2>; rel=next" % URL)],
            )
            self.assertEqual(http.next_link(response), URL + "?p=2")
            csv = http.request("GET", URL + "/csv").send()
            self.assertEqual((csv.headers, csv.body), ([("content-type", "text/csv")], b"a,b"))
            raw = http.request("GET", URL + "/raw").send()
            self.assertEqual((raw.headers, raw.body), ([], b"\x00\x01"))
            self.assertEqual(http.request("GET", URL + "/empty").send().body, b"")

    def test_captures_requests_with_their_headers(self):
        with FakeHost().respond(URL, json={}) as fake:
            http.request("GET", URL).header("X-Api-Key", "k").bearer("t").fetch_json()
        self.assertEqual(len(fake.requests), 1)
        self.assertEqual(
            fake.request_headers(),
            {"x-api-key": "k", "authorization": "Bearer t", "accept": "application/json"},
        )
        self.assertIsInstance(fake.requests[0].method, host.Method_Get)

    def test_captures_log_lines(self):
        with FakeHost() as fake:
            log.info("fetched page", records=3, problems=0)
            log.warn("odd")
            log.debug("d", a="b")
            log.error("e")
            log.trace("t")
            log.log("info", "by name")
            host.log(host.Level.WARN, "direct", [("k", "v")])
        self.assertEqual(
            [(l.level, l.message) for l in fake.logs],
            [("info", "fetched page"), ("warn", "odd"), ("debug", "d"), ("error", "e"),
             ("trace", "t"), ("info", "by name"), ("warn", "direct")],
        )
        self.assertEqual(fake.logs[0].fields, {"records": "3", "problems": "0"})
        self.assertEqual(fake.logs[6].fields, {"k": "v"})

    def test_the_clock(self):
        with FakeHost().at_millis(1_700_000_000_000) as fake:
            self.assertEqual(now_millis(), 1_700_000_000_000)
            fake.at_millis(5)
            self.assertEqual(host.now_millis(), 5)

    def test_uninstalling_puts_the_hint_back(self):
        fake = FakeHost().install()
        self.assertEqual(now_millis(), 0)
        fake.uninstall()
        for call in (now_millis, lambda: log.info("x"), lambda: http.request("GET", URL).send()):
            with self.assertRaises(RuntimeError) as caught:
                call()
            self.assertIn("no FakeHost installed", str(caught.exception))

    def test_nested_fakes_restore_the_outer_one(self):
        with FakeHost().at_millis(1):
            with FakeHost().at_millis(2):
                self.assertEqual(now_millis(), 2)
            self.assertEqual(now_millis(), 1)

    def test_config_entries(self):
        entries = config_entries(
            {"u": "https://x.test", "t": "s", "n": 3, "b": True, "l": ["a"]}, secrets={"t"}
        )
        self.assertEqual(
            [e.value for e in entries],
            [types.ConfigValue_Text("https://x.test"), types.ConfigValue_Secret("s"),
             types.ConfigValue_Number(3.0), types.ConfigValue_Boolean(True),
             types.ConfigValue_TextList(["a"])],
        )
        with self.assertRaises(TypeError):
            config_entries({"x": None})


class Bindings(unittest.TestCase):
    def test_load_bindings_is_idempotent_and_holds_one_world(self):
        self.assertEqual(load_bindings(ALL_WORLDS, wit=WIT), BINDINGS)
        with self.assertRaises(RuntimeError):
            load_bindings("directory-importer", wit=WIT)


if __name__ == "__main__":
    unittest.main()
