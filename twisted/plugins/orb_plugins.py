from twisted.application.service import ServiceMaker

orb_tracker = ServiceMaker("ORB tracker", "orb.tracker.tap", "An ORB tracker (supernode).", "orb-tracker")
orb_peer = ServiceMaker("ORB peer", "orb.peer.tap", "An ORB hosting peer.", "orb-peer")
