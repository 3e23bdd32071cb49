"""Posting results: where a callback may go (:mod:`.guard`), how it is posted (:mod:`.post`),
and the job that retries a failed one without invoking again (:mod:`.job`)."""
