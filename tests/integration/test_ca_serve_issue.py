"""`meshtls ca serve`'s issuance path (issue 10 section 5): the CA is parsed once at start
and loaded again when the intermediate is renewed on disk; concurrent issuances are recorded
together (group commit) and each stays a complete, audited row."""
import concurrent.futures
import sqlite3
import time

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from conftest import run
from proxy_util import make_pki
from test_ca_serve import TD, Server, call, make_csr


def rows(ca, sql, *args):
    with sqlite3.connect(f"file:{ca / 'meshtls.db'}?mode=ro", uri=True, timeout=10) as db:
        return db.execute(sql, args).fetchall()


def chain_of(body):
    end = "-----END CERTIFICATE-----\n"
    pems = [p + end for p in body["chain"].split(end) if p.strip()]
    assert len(pems) == 2
    return [x509.load_pem_x509_certificate(p.encode()) for p in pems]


def signed_by(leaf, issuer):
    issuer.public_key().verify(leaf.signature, leaf.tbs_certificate_bytes,
                               ec.ECDSA(leaf.signature_hash_algorithm))
    return leaf.issuer == issuer.subject


def test_concurrent_renewals_are_each_recorded_and_audited(tmp_path):
    pki = make_pki(tmp_path)
    ca = pki / "ca"
    csrs = [make_csr(tmp_path, f"web{i}", cn="web", sans=[f"URI:spiffe://{TD}/svc/web"])[0]
            for i in range(12)]
    s = Server(pki)
    try:
        with concurrent.futures.ThreadPoolExecutor(len(csrs)) as ex:
            out = list(ex.map(lambda c: call(s, pki, "POST", "/api/v1/renew", body={"csr": c},
                                             svc="web"), csrs))
    finally:
        assert s.stop() == 0
    assert all(code == 200 for code, _ in out), out
    serials = [b["serial"] for _, b in out]
    assert len(set(serials)) == len(serials)
    inter = x509.load_pem_x509_certificate((ca / "intermediate.crt").read_bytes())
    for _, b in out:
        leaf, chain_inter = chain_of(b)
        assert chain_inter == inter and signed_by(leaf, inter)
        uris = leaf.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value.get_values_for_type(
                x509.UniformResourceIdentifier)
        assert uris == [f"spiffe://{TD}/svc/web"]
    # one active certificate of web: the others superseded, each naming its successor
    got = {r[0]: r[1:] for r in rows(
        ca, "SELECT serial, status, replaced_by, out_dir, key_held FROM certificates "
            "WHERE service = 'web'")}
    assert set(serials) <= set(got)
    assert [s for s, r in got.items() if r[0] == "active"] in ([x] for x in serials)
    assert all(got[x][0] == "superseded" and got[x][1] in got for x in serials
               if got[x][0] != "active")
    assert all(got[x][2] == str((ca / "served" / "web").resolve()) and got[x][3] == 0
               for x in serials)
    # one "issue" event per certificate, in the transaction that recorded it
    audited = [x for x, in rows(ca, "SELECT serial FROM audit WHERE action = 'issue' AND "
                                    "detail = 'signed CSR'")]
    assert sorted(audited) == sorted(serials)


def test_a_renewed_intermediate_is_picked_up_while_serving(tmp_path):
    pki = make_pki(tmp_path)
    ca = pki / "ca"
    csr, _ = make_csr(tmp_path, "web2", cn="web", sans=[f"URI:spiffe://{TD}/svc/web"])
    s = Server(pki)
    try:
        code, body = call(s, pki, "POST", "/api/v1/renew", body={"csr": csr}, svc="web")
        assert code == 200
        old = chain_of(body)[1]
        run("ca", "renew-intermediate", "--dir", ca, "--root-key", ca / "root.key", "--new-key",
            check=True)
        new = x509.load_pem_x509_certificate((ca / "intermediate.crt").read_bytes())
        assert new.subject != old.subject
        # the server looks at the files at most once a second: renew until it signs with
        # the new one (bounded); the caller's certificate, from the old one, still counts
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            code, body = call(s, pki, "POST", "/api/v1/renew", body={"csr": csr}, svc="web")
            assert code == 200, body
            leaf, inter = chain_of(body)
            if inter == new:
                break
            time.sleep(0.2)
        assert inter == new and signed_by(leaf, new), s.log()
        assert "loaded the renewed intermediate" in s.log()
    finally:
        assert s.stop() == 0
