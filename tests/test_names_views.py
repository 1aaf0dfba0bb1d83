"""
What users see of names and deprecation, over the real names core
(orb.tracker.names) with statements taken in as a tracker takes them:
the DNS authority's answers, the names API, and the gateway's headers,
all on one deterministic clock.
"""

import json

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import getChildForRequest
from twisted.web.test.requesthelper import DummyRequest

from orb.dns.authority import NoSuchName, OrbAuthority
from orb.protocol import fid as fidmod
from orb.protocol import messages as m
from orb.protocol import names as nm
from orb.tracker.http import build_resource
from orb.tracker.names import Names
from orb.tracker.registry import Registry
from orb.tracker.stats import Stats
from tests import _records as records

NOW = 1_800_000_000
V1 = fidmod.to_text(fidmod.fid_for(b"views v1"))
V2 = fidmod.to_text(fidmod.fid_for(b"views v2"))


class _Session:
    def __init__(self):
        self.sent = []
        self.is_tracker = False
        self.inbound = True
        self.name = "owner"

    def send(self, message, response_to=0):
        self.sent.append(message)

    def refuse(self, request_id, code, text):
        self.sent.append(m.Error(code=int(code), ref_request_id=request_id, text=text[:200]))


class NamesViewTests(SynchronousTestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(NOW)
        self.registry = Registry(self.clock, records.key("views-tracker"))
        self.registry.publish_self([("10.0.0.1", 7400)])
        self.names = Names(self.clock, self.registry)
        self.owner = records.key("views-owner")
        self.label = nm.owner_label(self.owner.public_bytes)
        for fid in (V1, V2):
            self.registry.accept(records.function_record(self.owner, fid, name="adder"))
        self.authority = OrbAuthority(self.registry, lambda fid, limit: [], gateways=lambda: [("10.0.0.1", 7480)],
                                      names=self.names)
        self.root = build_resource(self.registry, Stats(self.clock), router=object(), clock=self.clock,
                                   names=self.names)

    def take(self, message):
        session = _Session()
        self.names.handlers()[message.TYPE](session, message, 1)
        (ack,) = session.sent
        self.assertEqual(ack.status, 0, ack)
        return ack

    def get(self, path, method=b"GET"):
        request = DummyRequest(path.lstrip("/").encode().split(b"/"))
        request.method = method
        request.requestHeaders.setRawHeaders(b"host", [b"gw.example"])
        request.isSecure = lambda: False
        resource = getChildForRequest(self.root, request)
        body = resource.render(request)
        return request, json.loads(body) if body else None

    def cname(self, name):
        answers, _, _ = self.authority.answer(name.encode(), 1)
        return [str(rr.payload.name) for rr in answers if rr.type == 5]

    def test_update_then_deprecation_then_sunset_as_users_see_it(self):
        """NAME v1, NAME v2, DEPRECATE v2: DNS, API and gateway follow each step; past the sunset v2 is gone."""
        self.take(nm.make_name(self.owner, "adder", 1, V1))
        self.assertEqual(self.cname(f"adder.{self.label}.orb"), [f"{V1}.orb"])
        self.take(nm.make_name(self.owner, "adder", 2, V2))
        self.assertEqual(self.cname(f"adder.{self.label}.orb"), [f"{V2}.orb"])
        _, doc = self.get(f"/api/v1/names/{self.label}/adder")
        self.assertEqual([(h["seq"], h["fid"], h["status"]) for h in doc["history"]],
                         [(2, V2, "current"), (1, V1, "superseded")])

        self.clock.advance(7)
        self.take(nm.make_deprecate(self.owner, V2, 1, successor=V1, sunset=NOW + 60))
        learnt = NOW + 7
        self.clock.advance(3)
        self.assertEqual(self.cname(f"adder.{self.label}.orb"), [f"{V1}.orb"])  # the newest not deprecated
        answers, _, _ = self.authority.answer(f"{V2}.orb".encode(), 16)
        strings = [s.decode() for rr in answers for s in rr.payload.data]
        self.assertEqual(strings[-3:], ["deprecated=1", f"successor={V1}", f"sunset={NOW + 60}"])
        request, doc = self.get(f"/f/{V2}")
        self.assertEqual(request.responseHeaders.getRawHeaders(b"deprecation"), [f"@{learnt}".encode()])
        self.assertEqual(request.responseHeaders.getRawHeaders(b"link"),
                         [f'<http://gw.example/f/{V1}>; rel="successor-version"'.encode()])
        self.assertEqual(doc["deprecation"]["successor"], V1)
        _, doc = self.get(f"/api/v1/names/{self.label}/adder")
        self.assertEqual((doc["serving"], [h["status"] for h in doc["history"]]), (V1, ["deprecated", "current"]))

        self.clock.advance(60)
        with self.assertRaises(NoSuchName):
            self.authority.answer(f"{V2}.orb".encode(), 1)
        request, doc = self.get(f"/f/{V2}", b"POST")
        self.assertEqual((request.responseCode, doc["code"]), (410, "gone"))
        request, doc = self.get(f"/api/v1/functions/{V2}")
        self.assertEqual((request.responseCode, doc["deprecation"]["gone"]), (410, True))
        _, doc = self.get(f"/api/v1/names/{self.label}/adder")
        self.assertEqual([h["status"] for h in doc["history"]], ["gone", "current"])
