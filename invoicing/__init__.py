"""invoicehook's domain: sales, invoices, numbering, the job queue, the store, settings and CLI."""
