"""What tests share besides fixtures, importable from any test folder as ``kit``.

``project`` (throwaway projects, ``ROOT``, ``TEST_SECRET``), ``champion`` (a campaign sent,
rewarded and retrained), ``cli`` (the ``tailormail`` command run as a user runs it),
``ledger`` (ledger rows made by hand), ``providers`` (signed provider webhook requests),
``provider_api`` (a provider's HTTP API, scripted), ``smtp`` (an SMTP mailbox on loopback,
messages made and parsed), ``sending`` (``tailormail send`` in its own process, over SMTP).

No test module imports another test module or ``conftest``
(tests/project/test_test_tree.py).
"""
