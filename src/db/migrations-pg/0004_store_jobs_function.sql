-- A batch of jobs stored in one round trip (JobStore #storeBatch in src/db/jobs.ts, where the rules
-- are explained): each column one array, in arrival order; jobs with `bounded` are robot calls under
-- the bound on calls waiting for confirmation. The advisory locks of the bounded portals are taken
-- first, in member id order (two batches never wait on each other in a cycle); the insert is a
-- statement of its own, so its snapshot is taken after the locks were granted and sees every job
-- committed before them. Called as one statement, it commits (and releases the locks) on its own:
-- a transaction of begin, locks, insert and commit cost four round trips per batch.
-- A column added to `jobs` with neither a default nor null allowed must be added here too.
CREATE FUNCTION c2d_store_jobs(
  p_kind text[], p_public_id text[], p_member_id text[], p_dedup_key text[], p_ordering_key text[],
  p_event_token text[], p_robot_code text[], p_document_id text[], p_input text[], p_state text[],
  p_run_at bigint[], p_deadline_at bigint[], p_return_values text[], p_log_message text[],
  p_finished_at bigint[], p_created_at bigint[], p_updated_at bigint[], p_phone text[],
  p_bounded boolean[], p_bound bigint
) RETURNS TABLE (stored_id bigint, stored_public_id text)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
  PERFORM pg_advisory_xact_lock(hashtext(locked.member_id))
     FROM (SELECT DISTINCT portal.member_id
             FROM unnest(p_member_id, p_bounded) AS portal(member_id, bounded)
            WHERE portal.bounded
            ORDER BY portal.member_id) AS locked;
  RETURN QUERY
  WITH batch AS (
    SELECT *
      FROM unnest(p_kind, p_public_id, p_member_id, p_dedup_key, p_ordering_key, p_event_token, p_robot_code,
                  p_document_id, p_input, p_state, p_run_at, p_deadline_at, p_return_values, p_log_message,
                  p_finished_at, p_created_at, p_updated_at, p_phone, p_bounded)
           WITH ORDINALITY AS b(kind, public_id, member_id, dedup_key, ordering_key, event_token, robot_code,
                                document_id, input, state, run_at, deadline_at, return_values, log_message,
                                finished_at, created_at, updated_at, phone, bounded, ord)
  ), wanted AS (
    SELECT batch.member_id, count(*) AS calls FROM batch WHERE batch.bounded GROUP BY batch.member_id
  ), room AS (
    -- The span of the portal's confirming ids is an upper bound of their number: below the bound
    -- nothing is counted; near it, at most p_bound of them are.
    SELECT w.member_id,
           CASE WHEN coalesce((SELECT max(j.id) FROM jobs j WHERE j.member_id = w.member_id AND j.state = 'confirming')
                              - (SELECT min(j.id) FROM jobs j WHERE j.member_id = w.member_id AND j.state = 'confirming') + 1, 0)
                     + w.calls <= p_bound
                THEN w.calls
                ELSE p_bound - (SELECT count(*) FROM (SELECT 1 FROM jobs j WHERE j.member_id = w.member_id AND j.state = 'confirming'
                                                      LIMIT p_bound) AS waiting)
           END AS room
      FROM wanted w
  ), ranked AS (
    SELECT batch.*, row_number() OVER (PARTITION BY batch.member_id, batch.bounded ORDER BY batch.ord) AS nth FROM batch
  )
  INSERT INTO jobs AS j (kind, public_id, member_id, dedup_key, ordering_key, event_token, robot_code, document_id, input,
                         state, run_at, deadline_at, return_values, log_message, finished_at, created_at, updated_at, phone)
  SELECT r.kind, r.public_id, r.member_id, r.dedup_key, r.ordering_key, r.event_token, r.robot_code, r.document_id, r.input,
         r.state, r.run_at, r.deadline_at, r.return_values, r.log_message, r.finished_at, r.created_at, r.updated_at, r.phone
    FROM ranked r LEFT JOIN room ON room.member_id = r.member_id
   WHERE NOT r.bounded OR r.nth <= room.room
   ORDER BY r.ord
  ON CONFLICT DO NOTHING
  RETURNING j.id, j.public_id;
END
$$;
