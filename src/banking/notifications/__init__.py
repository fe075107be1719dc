"""Notifications (DESIGN.md section 10): every transaction, hold and fraud event becomes a
message per user on ``banking.notifications`` and a signed webhook delivery per subscriber.

``ssrf`` checks webhook targets, ``signing`` signs and verifies deliveries, ``store`` is their
SQL, ``webhooks`` the subscription service (with its authorization), ``routing`` the consumer
that turns events into notifications and deliveries, ``delivery`` the loop that sends them.
"""
