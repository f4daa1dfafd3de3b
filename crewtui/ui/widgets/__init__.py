"""The dashboard's widgets: header, sessions tree, session detail and transcript, timeline, cron meters."""
