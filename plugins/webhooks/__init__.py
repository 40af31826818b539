"""Provider webhook handlers (SendGrid, Mailgun, Postmark, SES, Standard Webhooks) over
``engine.feedback.webhooks.WebhookHandler``."""
