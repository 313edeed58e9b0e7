"""Reading finished runs: tables and groups (report), paired comparisons (compare), intervals and tests
(stats), plots (plots), and the studies' own tables (studies)."""
