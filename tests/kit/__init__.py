"""What tests share besides fixtures, importable from any test folder as ``kit``.

``project`` (throwaway projects, ``ROOT``, ``TEST_SECRET``), ``champion`` (a campaign sent,
rewarded and retrained), ``providers`` (signed provider webhook requests), ``smtp`` (an
SMTP mailbox on loopback).
"""
