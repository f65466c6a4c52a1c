"""Helpers behind the fixtures of tests/conftest.py: real servers under temporary directories.

Fixtures (tests/conftest.py):

- ``pki`` (session): ``mssante.lab.pki.Pki``, the test PKI (docs/test-pki.md), e.g. ``pki.peer.fullchain``,
  ``pki.chain``, ``pki.impostor``.
- ``postfix_factory(name="mta", *, address=None, port=None, settings=None, smtpd_options=None,
  runner=LOCAL, start=False) -> PostfixInstance``: a clean ``postfix -c DIR`` instance with its own
  queue, data dir, log, ``multi_instance_name``/``syslog_name`` ``postfix-<name>``, and one smtpd on
  ``address:port`` (random 127.x.y.z and free port by default). See ``postfix.PostfixInstance``:
  ``postconf()``, ``add_master_service()``, ``add_smtpd_listener()``, ``write_map()``, ``start()``,
  ``reload()``, ``stop()``, ``check()``, ``wait_log(regex, timeout, since=log_mark())``,
  ``queue_ids()``, ``flush()``, ``hostport``; ``smtpd_tls_settings()``/``smtp_tls_settings()``.
- ``sink_factory(*, address=None, port=None, tls: Leaf | None = None, client_ca=None,
  require_client_cert=False, require_starttls=False) -> Sink`` and ``sink``: an aiosmtpd next hop;
  ``sink.wait_for(n)`` returns ``Received`` records (envelope, raw bytes, TLS version, verified
  client CN); ``sink.data_reply``/``sink.rcpt_replies`` script refusals.
- ``dovecot_factory(name="imap", *, address=None, cert=None, users=None, extra_config="",
  start=True) -> DovecotInstance``: IMAP (STARTTLS) + LMTP + ``auth_socket`` for Postfix SASL
  (``dovecot_settings_for_postfix()``), passwd-file users, ``lmtp_nexthop``, ``maildir_messages()``.
- ``host_network`` / ``host_factory(name) -> TestHost``: hosts with their own network, mount and UTS
  namespaces (``hosts.py``); ``host.run(argv)``, ``host.popen(argv)``, ``host.fs(path)``,
  ``host.address``; ``PostfixInstance.default_paths(host, address=host.address)`` runs Postfix at
  /etc/postfix inside one.
- ``base_dir``: a fresh 0755 directory under /var/tmp.

Client: ``smtpclient.send(host, port, *, sender, recipients, message, tls=TlsOptions(...), auth=None,
source_address=None) -> Transcript`` records each step's reply (``transcript.rcpt[addr].code``,
``transcript.delivered``, ``transcript.queue_id``, ``transcript.tls_version``, ``transcript.tls_error``).

Example::

    def test_x(pki, postfix_factory, sink_factory):
        sink = sink_factory()
        mta = postfix_factory("mx", settings={
            **smtpd_tls_settings(pki.hospital.fullchain, pki.hospital.key, pki.chain),
            "relayhost": sink.hostport, "smtpd_relay_restrictions": "permit_tls_all_clientcerts, reject"},
            start=True)
        t = send(mta.address, mta.port, sender="a@x.test", recipients=["b@y.test"], message=message(...),
                 tls=TlsOptions(cert=pki.peer.fullchain, key=pki.peer.key, ca_file=pki.chain))
        assert t.delivered and sink.wait_for(1)[0].rcpt_tos == ("b@y.test",)
"""
