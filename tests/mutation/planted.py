"""The planted changes: small wrong edits of the Lua scripts that the tests must catch.

Each names its file, the exact snippet it replaces (which must occur exactly once in
that file, so a change of the script that moves the snippet is noticed, not silently
skipped), the replacement, why it is wrong, and the tests that cover that script. A
replacement is valid Lua: a change that only breaks the syntax would be caught for
nothing (the runner loads every script first and reports such a change as invalid).
"""

from __future__ import annotations

from dataclasses import dataclass

SCRIPTS = "src/healthcomp/engine/scripts.py"
RATELIMIT = "src/healthcomp/core/ratelimit.py"
INDEX = "src/healthcomp/competitions/index.py"
COMP_REPO = "src/healthcomp/competitions/repo.py"
USER_REPO = "src/healthcomp/users/repo.py"

SYNC = "tests/domain/test_sync.py"
ENGINE = "tests/domain/test_engine.py"
BOARD = "tests/domain/test_leaderboard.py"
RULES = "tests/domain/test_rules.py"
COMPETITIONS = "tests/domain/test_competitions.py"
ACCESS = "tests/domain/test_access.py"
REVIEW = "tests/domain/test_review_routes.py"
RECOUNT = "tests/domain/test_recount_resume.py"
DISTRIBUTE = "tests/prizes/test_distribute.py"
CALCULATE = "tests/prizes/test_calculate.py"
WORKER = "tests/prizes/test_worker.py"
FEES = "tests/prizes/test_fees_property.py"
RATE = "tests/core/test_ratelimit.py"
SMOKE = "tests/test_smoke.py"
KILLS = "tests/test_mutation_kills.py"


@dataclass(frozen=True)
class Planted:
    id: str
    area: str
    file: str
    original: str
    replacement: str
    reason: str
    tests: tuple[str, ...]


PLANTED: tuple[Planted, ...] = (
    # --- sync: upsert per source, maximum across sources (SYNC_USER, APPLY) ------------
    Planted(
        "sync.sum_sources",
        "sync",
        SCRIPTS,
        "if x <= 4 and tonumber(part) > v[x] then v[x] = tonumber(part) end",
        "if x <= 4 then v[x] = v[x] + tonumber(part) end",
        "sources are added, not maxed: the same walk from phone and watch counts twice",
        (SYNC,),
    ),
    Planted(
        "sync.first_source_wins",
        "sync",
        SCRIPTS,
        "if x <= 4 and tonumber(part) > v[x] then v[x] = tonumber(part) end",
        "if x <= 4 and v[x] == 0 then v[x] = tonumber(part) end",
        "the first source by name wins instead of the maximum across sources",
        (SYNC,),
    ),
    Planted(
        "sync.resend_bumps_version",
        "sync",
        SCRIPTS,
        "if v[1] ~= ef.v[1] or v[2] ~= ef.v[2] or v[3] ~= ef.v[3] or v[4] ~= ef.v[4]"
        " or ef.ver == 0 then",
        "if true then",
        "idempotency: re-sending the same values makes a new version, applied again",
        (SYNC, KILLS + "::test_resending_the_same_day_makes_no_event"),
    ),
    Planted(
        "sync.minutes_change_dropped",
        "sync",
        SCRIPTS,
        "if v[1] ~= ef.v[1] or v[2] ~= ef.v[2] or v[3] ~= ef.v[3] or v[4] ~= ef.v[4]"
        " or ef.ver == 0 then",
        "if v[1] ~= ef.v[1] or v[2] ~= ef.v[2] or v[3] ~= ef.v[3] or ef.ver == 0 then",
        "a change of active minutes alone never reaches the competitions",
        (SYNC, ENGINE),
    ),
    Planted(
        "sync.window_last_day",
        "sync",
        SCRIPTS,
        "if day >= w[1] and day <= w[2] and now <= tonumber(w[3]) then",
        "if day >= w[1] and day < w[2] and now <= tonumber(w[3]) then",
        "off by one in the window: its last day is never pushed to the competition",
        (SYNC,),
    ),
    Planted(
        "sync.deadline_exclusive",
        "sync",
        SCRIPTS,
        "if day >= w[1] and day <= w[2] and now <= tonumber(w[3]) then",
        "if day >= w[1] and day <= w[2] and now < tonumber(w[3]) then",
        "off by one at the deadline: a sync at its last millisecond is not counted",
        (SYNC, ENGINE),
    ),
    Planted(
        "sync.foreign_competition",
        "sync",
        SCRIPTS,
        "if redis.call('HEXISTS', KEYS[3], cid) == 0 then return {NOT_MINE, cid} end",
        "if redis.call('HEXISTS', KEYS[3], cid) == 2 then return {NOT_MINE, cid} end",
        "a competition_id that is not one of the user's is not refused",
        (SYNC,),
    ),
    Planted(
        "apply.older_version_wins",
        "sync",
        SCRIPTS,
        "if ver > ov then",
        "if ver ~= ov then",
        "ordering: an older version of a day arriving late overwrites the newer one",
        (SYNC, ENGINE),
    ),
    Planted(
        "apply.first_day",
        "sync",
        SCRIPTS,
        "if day >= m[2] and day <= m[3] and synced <= deadline then",
        "if day > m[2] and day <= m[3] and synced <= deadline then",
        "off by one in the window: the competition's first day does not count",
        (SYNC,),
    ),
    Planted(
        "apply.no_deadline",
        "sync",
        SCRIPTS,
        "if day >= m[2] and day <= m[3] and synced <= deadline then",
        "if day >= m[2] and day <= m[3] then",
        "a day stored after the deadline (end + grace) still changes the result",
        (SYNC, ENGINE),
    ),
    Planted(
        "apply.adds_not_replaces",
        "sync",
        SCRIPTS,
        "for k = 1, 4 do e.t[k] = e.t[k] + v[k] - o[k] end",
        "for k = 1, 4 do e.t[k] = e.t[k] + v[k] end",
        "a day's new cumulative total is added to the score instead of replacing the old",
        (SYNC,),
    ),
    Planted(
        "apply.goal_at_target",
        "rules",
        SCRIPTS,
        "local met_new = (v[mi] >= target) and 1 or 0",
        "local met_new = (v[mi] > target) and 1 or 0",
        "a day exactly at the daily goal is not counted as met",
        (BOARD, RULES),
    ),
    Planted(
        "score.no_floor",
        "rules",
        SCRIPTS,
        "if s < 0 then s = 0 elseif s > MAXS then s = MAXS end",
        "if s > MAXS then s = MAXS end",
        "a score can fall below zero (an adjustment, then a lower correction)",
        (BOARD, RULES, KILLS + "::test_a_score_never_falls_below_zero"),
    ),
    # --- ranking and tie-break (PRELUDE, PAGE) -----------------------------------------
    Planted(
        "rank.ties_take_last",
        "ranking",
        SCRIPTS,
        "return redis.call('ZCOUNT', lb, '-inf', '(' .. fmt(-score)) + 1",
        "return redis.call('ZCOUNT', lb, '-inf', fmt(-score))",
        "ties take the last of their places (1, 3, 3, 4), not standard ranking (1, 2, 2, 4)",
        (BOARD,),
    ),
    Planted(
        "rank.off_by_one",
        "ranking",
        SCRIPTS,
        "return redis.call('ZCOUNT', lb, '-inf', '(' .. fmt(-score)) + 1",
        "return redis.call('ZCOUNT', lb, '-inf', '(' .. fmt(-score))",
        "off by one: the leader is ranked 0",
        (BOARD,),
    ),
    Planted(
        "tie.same_millisecond",
        "ranking",
        SCRIPTS,
        "if ms <= last then ms = last + 1 end",
        "if ms < last then ms = last end",
        "two writes in one millisecond share a tie time: the user id decides, not arrival",
        (BOARD, KILLS + "::test_writes_in_one_millisecond_get_distinct_tie_times"),
    ),
    Planted(
        "tie.sign_flipped",
        "ranking",
        SCRIPTS,
        "e.r = tick(meta)",
        "e.r = 999999999999999 - tick(meta)",
        "tie-break sign flipped: whoever reached the score last is listed first",
        (BOARD,),
    ),
    Planted(
        "tie.moves_without_score_change",
        "ranking",
        SCRIPTS,
        "if e.sc == prev_sc then return {{}}, {{}}, {{}}, {{}} end",
        "if false then return {{}}, {{}}, {{}}, {{}} end",
        "a write that leaves the score as it was still moves the tie time (loses its place)",
        (BOARD, ENGINE, KILLS + "::test_a_write_that_keeps_the_score_keeps_the_place"),
    ),
    Planted(
        "board.old_member_kept",
        "ranking",
        SCRIPTS,
        "redis.call('ZREM', lb, e.m)",
        "local _ = e.m",
        "a score change leaves the old board member: the participant is listed twice",
        (BOARD,),
    ),
    Planted(
        "board.reinstate_zadd_dropped",
        "ranking",
        SCRIPTS,
        "  redis.call('ZADD', KEYS[2], fmt(-e.sc), e.m)\n  redis.call('HSET', KEYS[3], user,"
        " cjson.encode(e))\n  rank = rank_of(KEYS[2], e.sc)",
        "  redis.call('HSET', KEYS[3], user, cjson.encode(e))\n  rank = rank_of(KEYS[2], e.sc)",
        "dropped ZADD: a reinstated participant never comes back on the board",
        (REVIEW,),
    ),
    Planted(
        "page.rank_off_by_one",
        "ranking",
        SCRIPTS,
        "elseif score ~= prev then rank = start + n + 1 end",
        "elseif score ~= prev then rank = start + n end",
        "a page's ranks after its first row are one too small",
        (BOARD,),
    ),
    Planted(
        "page.around_not_centred",
        "ranking",
        SCRIPTS,
        "start = pos - math.floor(limit / 2)",
        "start = pos - limit + 1",
        "around=me puts the participant last on the page, not in its middle",
        (BOARD,),
    ),
    Planted(
        "page.private_readable",
        "access",
        SCRIPTS,
        "  if m[2] == 'public' then\n    if members_only then return {NOT_PARTICIPANT} end",
        "  if m[2] ~= 'nobody' then\n    if members_only then return {NOT_PARTICIPANT} end",
        "a private competition's board is readable by any signed-in user",
        (ACCESS,),
    ),
    # --- trusted writes: adjustments (SET_TOTALS, JOIN) ---------------------------------
    Planted(
        "adjust.value_as_offset",
        "adjustments",
        SCRIPTS,
        "if ARGV[5 + 2 * k] == '1' then off[k] = tonumber(ARGV[6 + 2 * k]) - base[k] end",
        "if ARGV[5 + 2 * k] == '1' then off[k] = tonumber(ARGV[6 + 2 * k]) end",
        "the written total is kept as the offset, not total minus activity (counted twice)",
        (BOARD, RULES),
    ),
    Planted(
        "adjust.money_not_service_only",
        "adjustments",
        SCRIPTS,
        "if m[5] == '1' then return {SERVICE_ONLY} end",
        "if m[5] == 'yes' then return {SERVICE_ONLY} end",
        "an organizer may write scores in a competition with money",
        (RULES,),
    ),
    Planted(
        "adjust.deadline_a_day_late",
        "adjustments",
        SCRIPTS,
        "if now > tonumber(m[4]) then return {PAST_DEADLINE} end",
        "if now > tonumber(m[4]) + 86400000 then return {PAST_DEADLINE} end",
        "an organizer may still write scores for a day after the grace period",
        (RULES,),
    ),
    Planted(
        "adjust.no_audit",
        "adjustments",
        SCRIPTS,
        "redis.call('RPUSH', KEYS[7], cjson.encode({at = now, by = ARGV[4], action = 'set_totals',",
        "tostring(cjson.encode({at = now, by = ARGV[4], action = 'set_totals',",
        "a trusted write leaves no audit record",
        (RULES,),
    ),
    Planted(
        "adjust.lost_on_rejoin",
        "adjustments",
        SCRIPTS,
        "e.sc = score_of(e, offsets(KEYS[7], user), tonumber(m[4]) + 1, m[5] == 'goal')",
        "e.sc = score_of(e, {0, 0, 0, 0, 0}, tonumber(m[4]) + 1, m[5] == 'goal')",
        "a rejoin scores without the participation's adjustments",
        (RULES, ENGINE, KILLS + "::test_an_adjustment_alone_survives_leave_and_rejoin"),
    ),
    # --- recount after a rule change (UPDATE, RECOUNT_*) --------------------------------
    Planted(
        "recount.days_after_window",
        "recount",
        SCRIPTS,
        "if flat[i] >= m[2] and flat[i] <= m[3] then",
        "if flat[i] >= m[2] then",
        "a recount keeps counting days after the new window's end",
        (ENGINE, COMPETITIONS, KILLS + "::test_a_shorter_window_drops_the_days_after_its_end"),
    ),
    Planted(
        "recount.done_counted_twice",
        "recount",
        SCRIPTS,
        "if redis.call('SADD', KEYS[9], user) == 1 then",
        "if redis.call('SADD', KEYS[9], user) >= 0 then",
        "a step run again counts its participant as done twice: the job ends early",
        (RECOUNT + "::test_interrupted_recount_resumes_where_it_stopped_and_ends_exact",),
    ),
    Planted(
        "recount.superseded_step_writes",
        "recount",
        SCRIPTS,
        "if job[1] ~= 'running' or job[2] ~= ARGV[4] then return {STALE} end",
        "if job[1] ~= 'running' then return {STALE} end",
        "a step of a recount that a newer edit superseded still writes",
        (
            RECOUNT + "::test_a_newer_edit_supersedes_the_running_recount",
            KILLS + "::test_a_step_of_a_superseded_recount_writes_nothing",
        ),
    ),
    Planted(
        "recount.done_set_kept",
        "recount",
        SCRIPTS,
        "redis.call('DEL', KEYS[4], KEYS[5], KEYS[7])",
        "redis.call('DEL', KEYS[4], KEYS[7])",
        "a new recount keeps the last one's done set: its participants are skipped",
        (RECOUNT + "::test_a_newer_edit_supersedes_the_running_recount", ENGINE),
    ),
    Planted(
        "recount.lease_ignored",
        "recount",
        SCRIPTS,
        "if owner and owner ~= ARGV[1] and tonumber(until_ms) > now then return {STALE} end",
        "if owner and owner ~= ARGV[1] and tonumber(until_ms) < now then return {STALE} end",
        "another process's live lease is ignored: two runners on one job",
        (RECOUNT + "::test_one_runner_per_job_in_a_process",),
    ),
    # --- prizes: distribute exactly once, refunds, payout inputs ------------------------
    Planted(
        "distribute.twice",
        "prizes",
        SCRIPTS,
        "if m[1] ~= 'open' then return {CLOSED, m[1]} end",
        "if m[1] == 'cancelled' then return {CLOSED, m[1]} end",
        "exactly once: a finalized competition is finalized again (a second ledger)",
        (DISTRIBUTE, KILLS + "::test_a_finalized_competition_is_never_finalized_again"),
    ),
    Planted(
        "distribute.stale_ledger",
        "prizes",
        SCRIPTS,
        "if (m[2] or '0') ~= ARGV[2] then return {STALE} end",
        "if (m[2] or '0') == 'never' then return {STALE} end",
        "a ledger computed before a later change of the board is still written",
        (DISTRIBUTE, KILLS + "::test_a_ledger_of_an_older_board_is_not_written"),
    ),
    Planted(
        "distribute.outbox_inverted",
        "prizes",
        SCRIPTS,
        "if ARGV[b + 2] == '1' then redis.call('XADD', KEYS[4], '*', 'p', ARGV[b + 1]) end",
        "if ARGV[b + 2] == '0' then redis.call('XADD', KEYS[4], '*', 'p', ARGV[b + 1]) end",
        "the outbox gets the lines that pay nothing instead of the payouts",
        (DISTRIBUTE, WORKER),
    ),
    Planted(
        "settle.twice",
        "prizes",
        SCRIPTS,
        "if line.status ~= 'pending' then return {OK, line.status} end",
        "if line.status == 'never' then return {OK, line.status} end",
        "a payment result that comes twice is written twice (a paid line can turn failed)",
        (WORKER, KILLS + "::test_a_payment_result_is_recorded_once"),
    ),
    Planted(
        "cancel.refunds_leavers",
        "prizes",
        SCRIPTS,
        "  if p.state == 'active' then\n    active = active + 1",
        "  if p.state ~= nil then\n    active = active + 1",
        "a cancel also refunds participants who left before (their fee was never owed)",
        (DISTRIBUTE, RULES),
    ),
    Planted(
        "payout.tie_at_last_place_dropped",
        "prizes",
        SCRIPTS,
        "if #rows == 2 * k then",
        "if #rows == 2 * k + 2 then",
        "participants tied with the last paid place are left out of the payout",
        (CALCULATE, DISTRIBUTE, KILLS + "::test_a_tie_at_the_last_paid_place_shares_it"),
    ),
    Planted(
        "fees.leave_adds_fee",
        "prizes",
        SCRIPTS,
        "if p.state == 'active' then add_fee(KEYS[1], -(p.fee_cents or 0)) end",
        "if p.state == 'active' then add_fee(KEYS[1], (p.fee_cents or 0)) end",
        "HINCRBY with the wrong sign: a leave adds its fee to the pool instead of removing it",
        (FEES, CALCULATE),
    ),
    # --- membership --------------------------------------------------------------------
    Planted(
        "join.full_off_by_one",
        "membership",
        SCRIPTS,
        "if maxp > 0 and redis.call('HLEN', KEYS[3]) >= maxp then return {FULL} end",
        "if maxp > 0 and redis.call('HLEN', KEYS[3]) > maxp then return {FULL} end",
        "off by one: one participant more than max_participants gets in",
        (COMPETITIONS,),
    ),
    Planted(
        "join.after_end",
        "membership",
        SCRIPTS,
        "if now >= tonumber(m[2]) then return {ENDED} end\nlocal maxp",
        "if now > tonumber(m[2]) + 86400000 then return {ENDED} end\nlocal maxp",
        "a join is still accepted for a day after the competition ended",
        (COMPETITIONS,),
    ),
    Planted(
        "update.max_below_count",
        "membership",
        SCRIPTS,
        "if maxp > 0 and count > maxp then return {TOO_MANY, count} end",
        "if maxp > 0 and count > maxp + 1 then return {TOO_MANY, count} end",
        "off by one: an edit may set max_participants one below the participant count",
        (RULES, COMPETITIONS),
    ),
    Planted(
        "reserve.cap_off_by_one",
        "membership",
        COMP_REPO,
        "if maximum > 0 and open >= maximum and not known then",
        "if maximum > 0 and open > maximum and not known then",
        "an organizer may hold one more open competition than the cap",
        (ACCESS,),
    ),
    Planted(
        "index.private_listed",
        "access",
        INDEX,
        "  if pub then\n    redis.call('ZADD', zkey(2, 'created'), created, cid)",
        "  if true then\n    redis.call('ZADD', zkey(2, 'created'), created, cid)",
        "private competitions appear in the public listings",
        (ACCESS, COMPETITIONS),
    ),
    Planted(
        "index.active_by_start",
        "membership",
        INDEX,
        "elseif now < ends then status, score = 'active', ends",
        "elseif now < ends then status, score = 'active', starts",
        "active competitions listed by start, not soonest end first",
        (COMPETITIONS, KILLS + "::test_active_competitions_are_listed_soonest_end_first"),
    ),
    Planted(
        "profile.reset_on_sight",
        "membership",
        USER_REPO,
        "if redis.call('EXISTS', KEYS[1]) == 0 then",
        "if redis.call('EXISTS', KEYS[1]) >= 0 then",
        "every sign-in resets the profile: a chosen display name is lost",
        (SMOKE, BOARD),
    ),
    # --- rate limit (GCRA) --------------------------------------------------------------
    Planted(
        "gcra.double_burst",
        "rate limit",
        RATELIMIT,
        "local wait = tat - tolerance - now",
        "local wait = tat - 2 * tolerance - now",
        "the burst let through is twice the configured one",
        (RATE,),
    ),
    Planted(
        "gcra.flush_charges_one",
        "rate limit",
        RATELIMIT,
        "local new_tat = tat + n * interval",
        "local new_tat = tat + interval",
        "a flush of n requests admitted by a process charges one: processes multiply the limit",
        (RATE,),
    ),
    # (An idle bucket banking credit, `if tat < now then tat = now end` loosened, is an
    # equivalent change: the key expires a millisecond after its TAT, so a stored TAT is
    # never more than that in the past. The expiry itself is planted instead.)
    Planted(
        "gcra.expiry_unit",
        "rate limit",
        RATELIMIT,
        "math.ceil((new_tat - now) / 1000) + 1)",
        "math.ceil((new_tat - now) / 1000000) + 1)",
        "the bucket's expiry in the wrong unit: it forgets what was spent a thousand times early",
        (RATE,),
    ),
    Planted(
        "gcra.refuses_late",
        "rate limit",
        RATELIMIT,
        "if (strict and wait > 0) or n == 0 then",
        "if (strict and wait > 1000000) or n == 0 then",
        "off by a second in the window: refusals start one emission-second late",
        (RATE,),
    ),
)
