"""The wallet file (orb.pay.wallet): mode 0600, keystore with a passphrase, never overwritten."""

import json
import os
import stat

from twisted.trial.unittest import SynchronousTestCase

from orb.pay import wallet as W


class WalletTests(SynchronousTestCase):
    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        self.path = os.path.join(self.dir, "w", "wallet.json")

    def test_raw_key_private(self):
        """A wallet without passphrase is a 0600 file in a 0700 directory and loads back to the same address."""
        account = W.create(self.path)
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.dirname(self.path)).st_mode), 0o700)
        self.assertEqual(W.load(self.path).address, account.address)
        self.assertEqual(W.info(self.path), {"path": self.path, "address": account.address, "encrypted": False})

    def test_keystore(self):
        """With a passphrase the file is a v3 keystore holding no clear key; the address shows without the passphrase."""
        account = W.create(self.path, "correct horse")
        with open(self.path) as f:
            doc = json.load(f)
        self.assertEqual(doc["version"], 3)
        self.assertNotIn(bytes(account.key).hex(), json.dumps(doc))
        self.assertEqual(W.info(self.path)["address"], account.address)
        self.assertTrue(W.info(self.path)["encrypted"])
        self.assertEqual(W.load(self.path, "correct horse").key, account.key)
        self.assertRaises(W.BadPassphrase, W.load, self.path, "wrong")
        self.assertRaises(W.PassphraseRequired, W.load, self.path)

    def test_never_overwrites(self):
        """Making a wallet where one exists is refused and the old one is intact."""
        account = W.create(self.path)
        self.assertRaises(W.WalletExists, W.create, self.path)
        self.assertEqual(W.load(self.path).address, account.address)

    def test_unsafe_mode_refused(self):
        """A wallet others can read is refused, naming the fix."""
        W.create(self.path)
        os.chmod(self.path, 0o644)
        e = self.assertRaises(W.WalletError, W.load, self.path)
        self.assertIn("chmod 600", str(e))

    def test_missing_and_garbage(self):
        """A missing file or one holding neither a keystore nor a key gives a WalletError that names the file."""
        self.assertRaises(W.WalletError, W.info, self.path)
        os.makedirs(os.path.dirname(self.path))
        for content in (b"hello", b"{not json", b'{"version": 1}', b"0x" + b"zz" * 32, b"0x" + b"00" * 32):
            with open(self.path, "wb") as f:
                f.write(content)
            os.chmod(self.path, 0o600)
            e = self.assertRaises(W.WalletError, W.load, self.path)
            self.assertIn(self.path, str(e))
            self.assertNotIn("0000000000", str(e))  # never the content

    def test_passphrase_file(self):
        """The passphrase is the first line of its file; an empty file is refused."""
        os.makedirs(self.dir)
        p = os.path.join(self.dir, "pw")
        with open(p, "w") as f:
            f.write("s3cret\nignored\n")
        self.assertEqual(W.read_passphrase_file(p), "s3cret")
        with open(p, "w") as f:
            f.write("\n")
        self.assertRaises(W.WalletError, W.read_passphrase_file, p)
