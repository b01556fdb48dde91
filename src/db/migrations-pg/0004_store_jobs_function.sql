-- A batch of jobs stored in one round trip (JobStore #storeBatch in src/db/jobs.ts, where the rules
-- are explained): each column one array, in arrival order; jobs with `bounded` are robot calls under
-- the bound on calls waiting for confirmation. The advisory locks of the bounded portals are taken
-- first, in member id order (two batches never wait on each other in a cycle); the insert is a
-- statement of its own, so its snapshot is taken after the locks were granted and sees every job
-- committed before them. Called as one statement, it commits (and releases the locks) on its own:
-- a transaction of begin, locks, insert and commit cost four round trips per batch.
-- A column added to `jobs` with neither a default nor null allowed must be added here too.
-- Its plans are generic (plan_cache_mode): PostgreSQL otherwise planned the insert anew on many
-- calls, half its CPU per call with two server processes (measured by `npm run bench -- --db postgres`).
CREATE FUNCTION c2d_store_jobs(
  p_kind text[], p_public_id text[], p_member_id text[], p_dedup_key text[], p_ordering_key text[],
  p_event_token text[], p_robot_code text[], p_document_id text[], p_input text[], p_state text[],
  p_run_at bigint[], p_deadline_at bigint[], p_return_values text[], p_log_message text[],
  p_finished_at bigint[], p_created_at bigint[], p_updated_at bigint[], p_phone text[],
  p_bounded boolean[], p_bound bigint
) RETURNS TABLE (stored_id bigint, stored_public_id text)
LANGUAGE plpgsql VOLATILE SET plan_cache_mode = force_generic_plan AS $$
BEGIN
  -- The bound needs each statement's own snapshot (READ COMMITTED); under a stricter isolation the
  -- insert's snapshot would be the caller's, taken before the locks (the server's connections set it: src/db/database.ts).
  IF current_setting('transaction_isolation') <> 'read committed' THEN
    RAISE EXCEPTION 'c2d_store_jobs needs READ COMMITTED, the session has %', current_setting('transaction_isolation');
  END IF;
  -- Byte order (COLLATE "C"): the order JavaScript sorts member ids in, whatever the database's collation.
  PERFORM pg_advisory_xact_lock(hashtext(locked.member_id))
     FROM (SELECT DISTINCT portal.member_id COLLATE "C" AS member_id
             FROM unnest(p_member_id, p_bounded) AS portal(member_id, bounded)
            WHERE portal.bounded
            ORDER BY 1) AS locked;
  RETURN QUERY
  WITH given AS (
    SELECT *
      FROM unnest(p_kind, p_public_id, p_member_id, p_dedup_key, p_ordering_key, p_event_token, p_robot_code,
                  p_document_id, p_input, p_state, p_run_at, p_deadline_at, p_return_values, p_log_message,
                  p_finished_at, p_created_at, p_updated_at, p_phone, p_bounded)
           WITH ORDINALITY AS b(kind, public_id, member_id, dedup_key, ordering_key, event_token, robot_code,
                                document_id, input, state, run_at, deadline_at, return_values, log_message,
                                finished_at, created_at, updated_at, phone, bounded, ord)
  ), batch AS (
    -- `adds`: the job would add a call waiting for confirmation: bounded, confirming, its dedup key
    -- neither stored already nor taken by an earlier job of the batch. Only those use up room.
    -- The look for a stored key is a lateral join with a limit, one index probe per job: as an
    -- EXISTS, PostgreSQL may hash the whole jobs table instead (it did, once the plan was generic:
    -- its CPU per call grew with every call waiting).
    SELECT given.*,
           given.bounded AND given.state = 'confirming'
             AND (given.dedup_key IS NULL
                  OR (row_number() OVER (PARTITION BY given.member_id, given.dedup_key ORDER BY given.ord) = 1
                      AND stored.found IS NULL)) AS adds
      FROM given
      LEFT JOIN LATERAL (SELECT true AS found FROM jobs j
                          WHERE given.dedup_key IS NOT NULL AND j.member_id = given.member_id AND j.dedup_key = given.dedup_key
                          LIMIT 1) AS stored ON true
  ), placed AS (
    -- How many jobs adding a waiting call come before each job of its portal in the batch.
    SELECT batch.*,
           coalesce(sum(batch.adds::int) OVER (PARTITION BY batch.member_id ORDER BY batch.ord
                                               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS before
      FROM batch
  ), wanted AS (
    SELECT placed.member_id, sum(placed.adds::int) AS calls FROM placed WHERE placed.bounded GROUP BY placed.member_id
  ), room AS (
    -- The span of the portal's confirming ids is an upper bound of their number: clearly below the
    -- bound, nothing is counted (the room is at least what the batch adds, plus one); near it, at
    -- most p_bound of them are.
    SELECT w.member_id,
           CASE WHEN coalesce((SELECT max(j.id) FROM jobs j WHERE j.member_id = w.member_id AND j.state = 'confirming')
                              - (SELECT min(j.id) FROM jobs j WHERE j.member_id = w.member_id AND j.state = 'confirming') + 1, 0)
                     + w.calls < p_bound
                THEN w.calls + 1
                ELSE p_bound - (SELECT count(*) FROM (SELECT 1 FROM jobs j WHERE j.member_id = w.member_id AND j.state = 'confirming'
                                                      LIMIT p_bound) AS waiting)
           END AS room
      FROM wanted w
  )
  -- A bounded job is stored while its portal has fewer than p_bound calls waiting, counting those the
  -- batch adds before it (as BOUNDED_INSERT decides for one job). Ids follow the batch's order.
  INSERT INTO jobs AS j (kind, public_id, member_id, dedup_key, ordering_key, event_token, robot_code, document_id, input,
                         state, run_at, deadline_at, return_values, log_message, finished_at, created_at, updated_at, phone)
  SELECT p.kind, p.public_id, p.member_id, p.dedup_key, p.ordering_key, p.event_token, p.robot_code, p.document_id, p.input,
         p.state, p.run_at, p.deadline_at, p.return_values, p.log_message, p.finished_at, p.created_at, p.updated_at, p.phone
    FROM placed p LEFT JOIN room ON room.member_id = p.member_id
   WHERE NOT p.bounded OR p.before < room.room
   ORDER BY p.ord
  ON CONFLICT DO NOTHING
  RETURNING j.id, j.public_id;
END
$$;
