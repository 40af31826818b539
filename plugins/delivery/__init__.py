"""Delivery backends: SMTP, the providers' HTTP APIs (SES, SendGrid, Postmark, Mailgun), and
the outbox, memory and null backends for projects, tests and rehearsals."""
