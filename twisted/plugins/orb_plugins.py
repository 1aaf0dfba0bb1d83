from twisted.application.service import ServiceMaker

orb_tracker = ServiceMaker("ORB tracker", "orb.tracker.tap", "An ORB tracker (supernode).", "orb-tracker")
orb_peer = ServiceMaker("ORB peer", "orb.peer.tap", "An ORB hosting peer.", "orb-peer")
orb_chain = ServiceMaker("ORB chain", "orb.pay.tap", "The embedded Ethereum devnet chain over JSON-RPC.", "orb-chain")
