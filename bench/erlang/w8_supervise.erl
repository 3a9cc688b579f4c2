%% W8 supervise (BEAM peer of bench/w8_supervise.cpp): a one_for_one
%% supervisor with N permanent gen_server workers; a killer kills a random
%% worker every 1 ms for D seconds while a client calls random workers
%% continuously.
%%
%%   erl +P 4000000 -noshell -pa DIR -s w8_supervise main [D=5 seconds] [N=1000]
%%
%% Worker I is gen_server:start_link({local, wI}, ?MODULE, {worker, I}, [])
%% (this module is both the supervisor's and the workers' callback module);
%% it answers `ping` with I. The supervisor has intensity 1,000,000 per 1 s,
%% so restarts never exhaust it. Logging is off (logger primary level none):
%% the supervisor's child_terminated reports are not printed.
%%
%% The killer kills D*1000 times, at absolute times T0 + 1 ms, T0 + 2 ms, ...
%% (erlang:monotonic_time in ms; it waits for each with an absolute timer,
%% erlang:start_timer(Slot, self(), slot, [{abs, true}]); how many kills
%% were more than 1 ms late and the largest lateness go to stderr). Each kill picks a random worker whose previous
%% kill (if any) has been answered by its replacement, looks its pid up
%% (whereis), records the time and sends exit(Pid, kill), then spawns a
%% prober: it polls whereis (then erlang:yield()) until the name is held by
%% another pid, calls that pid with ping and reports the time of the answer
%% to the killer, which records kill-to-answer in a `counters` histogram
%% with the buckets of bench/latency_hist.hpp.
%%
%% The client calls gen_server:call(wI, ping) for random I until the killer
%% has made its last kill (an `atomics` flag), catching exits; it counts
%% calls_ok (answered with I) and calls_failed and records each failure's
%% worker, start and end times and reason.
%%
%% Verification (halt 1 otherwise): as ember's: every kill found a named
%% worker and was followed by a new pid under the name answering with the
%% right index (restarts == kills == D*1000); every answer the client got
%% was right; every failed call failed with killed or noproc and overlapped
%% a kill of the same worker (killed at or before the call's end,
%% replacement answering at or after its start); at the end the N names are
%% held by N distinct pids that answer ping rightly and count_children says
%% N active workers. Then the supervisor is stopped (gen_server:stop).
%% Same RESULT line as ember's, plus runtime=beam.
-module(w8_supervise).
-export([main/0, main/1]).
-export([init/1, handle_call/3, handle_cast/2]).

-define(BUCKETS, (256 + 56 * 128)).

main() -> main([]).
main(Args) ->
    D = bench_util:arg(Args, 1, 5),
    N = bench_util:arg(Args, 2, 1000),
    spawn(fun() -> driver(D, N) end).

%% --- callbacks: the supervisor ({sup, Names}) and a worker ({worker, I}) ---------

init({sup, Names}) ->
    Children = [#{id => Name,
                  start => {gen_server, start_link, [{local, Name}, ?MODULE, {worker, I}, []]},
                  restart => permanent, shutdown => 5000, type => worker}
                || {I, Name} <- lists:zip(lists:seq(0, tuple_size(Names) - 1), tuple_to_list(Names))],
    {ok, {#{strategy => one_for_one, intensity => 1000000, period => 1}, Children}};
init({worker, I}) ->
    {ok, I}.

handle_call(ping, _From, I) -> {reply, I, I}.

handle_cast(_Msg, I) -> {noreply, I}.

%% --- the driver ---------------------------------------------------------------------

driver(D, N) ->
    watchdog(max(60, 2 * D + 30)),
    logger:set_primary_config(level, none),
    Me = self(),
    NKills = D * 1000,
    Names = list_to_tuple([list_to_atom("w" ++ integer_to_list(I)) || I <- lists:seq(0, N - 1)]),
    {ok, Sup} = supervisor:start_link(?MODULE, {sup, Names}),
    Done = atomics:new(1, []),  % 1: the killer has made its last kill
    Killer = spawn(fun() -> killer(NKills, N, Names, Done, Me) end),
    Client = spawn(fun() -> client(N, Names, Done, Me) end),
    Client ! go,
    Killer ! go,
    {K, Kills} = receive {killer_done, K0, Kills0} -> {K0, Kills0} end,
    C = receive {client_done, C0} -> C0 end,
    Final = [{I, whereis(element(I + 1, Names)),
              try gen_server:call(element(I + 1, Names), ping) catch exit:_ -> failed end}
             || I <- lists:seq(0, N - 1)],
    FinalWrong = length([x || {I, _, V} <- Final, V =/= I]),
    Distinct = sets:size(sets:from_list([P || {_, P, _} <- Final, is_pid(P)])),
    Active = proplists:get_value(active, supervisor:count_children(Sup)),
    ok = gen_server:stop(Sup),
    verify(NKills, N, Names, K, Kills, C, FinalWrong, Distinct, Active),
    io:format(standard_error, "W8: ~w of ~w kills were more than 1 ms behind their slot, the latest by ~.1f us~n",
              [maps:get(late_kills, K), maps:get(kills, K), maps:get(max_lag_ns, K) / 1000]),
    Hist = maps:get(hist, K),
    Counts = [counters:get(Hist, I) || I <- lists:seq(1, ?BUCKETS)],
    Restarts = maps:get(restored, K),
    io:format("RESULT W8 restarts=~w restart_p99_us=~.3f calls_ok=~w calls_failed=~w restart_p50_us=~.3f "
              "restart_max_us=~.1f runtime=beam~n",
              [Restarts, bench_util:hist_quantile_ns(Counts, Restarts, 0.99) / 1000,
               maps:get(ok, C), maps:get(failed, C),
               bench_util:hist_quantile_ns(Counts, Restarts, 0.5) / 1000,
               maps:get(max_ns, K) / 1000]),
    bench_util:finish().

verify(NKills, N, Names, K, Kills, C, FinalWrong, Distinct, Active) ->
    #{kills := NK, restored := NR, unnamed := Unnamed, bad_probes := Bad, all_restored := All, hist := Hist} = K,
    Samples = lists:sum([counters:get(Hist, I) || I <- lists:seq(1, ?BUCKETS)]),
    {NK, NR, Unnamed, Bad, All, Samples, map_size(Kills)} =:= {NKills, NKills, 0, 0, true, NKills, NKills} orelse
        bench_util:fail("W8: ~w kills (expected ~w), ~w replacements answered (all in time: ~w), ~w picked "
                        "workers had no registered name, ~w probes got a wrong answer or failed, ~w restart samples",
                        [NK, NKills, NR, All, Unnamed, Bad, Samples]),
    NotNew = [Kr || {_, {_, Old, _, _, New}} = Kr <- maps:to_list(Kills), New =:= Old orelse not is_pid(New)],
    NotNew =:= [] orelse bench_util:fail("W8: a 'replacement' is not a new process: ~p", [hd(NotNew)]),
    #{ok := Ok, failed := Failed, wrong := Wrong, failures := Failures} = C,
    (Wrong =:= 0 andalso Ok > 0) orelse
        bench_util:fail("W8: the client got ~w wrong answers and ~w right ones", [Wrong, Ok]),
    length(Failures) =:= Failed orelse
        bench_util:fail("W8: ~w failures recorded, the client counted ~w", [length(Failures), Failed]),
    %% Every failed call overlapped a kill of its worker.
    ByWorker = maps:groups_from_list(fun({I, _, _, _, _}) -> I end, maps:values(Kills)),
    Unexplained = [F || {I, Start, End, Why} = F <- Failures,
                        not (lists:member(Why, [killed, noproc]) andalso
                             lists:any(fun({_, _, Killed, Restored, _}) ->
                                               Killed =< End andalso (Restored =:= undefined orelse Restored >= Start)
                                       end, maps:get(I, ByWorker, [])))],
    Unexplained =:= [] orelse
        bench_util:fail("W8: ~w of ~w failed calls are not explained by a kill, first: ~p (~s)",
                        [length(Unexplained), Failed, hd(Unexplained), element(element(1, hd(Unexplained)) + 1, Names)]),
    {FinalWrong, Distinct, Active} =:= {0, N, N} orelse
        bench_util:fail("W8: at the end ~w workers did not answer ping rightly, ~w distinct pids under the ~w "
                        "names, ~w active children", [FinalWrong, Distinct, N, Active]).

watchdog(Limit) ->
    spawn(fun() ->
                  receive after Limit * 1000 ->
                          io:format("RESULT W8 timeout=1 runtime=beam~n"),
                          io:format(standard_error, "W8: did not finish within ~w s~n", [Limit]),
                          erlang:halt(2)
                  end
          end).

%% --- the killer and its probers -------------------------------------------------------

-record(k, {n, names, hist, pending = #{}, outstanding = 0, kills = #{}, nkills = 0, restored = 0,
            unnamed = 0, bad = 0, max_lag = 0, late = 0, max_ns = 0}).

killer(NKills, N, Names, Done, Driver) ->
    receive go -> ok end,
    rand:seed(exsss, {8, 8, 8}),
    S0 = #k{n = N, names = Names, hist = counters:new(?BUCKETS, [])},
    T0 = erlang:monotonic_time(millisecond),
    S1 = kill_loop(1, NKills, T0, S0),
    atomics:put(Done, 1, 1),
    {S2, All} = drain_restored(S1),
    Driver ! {killer_done, #{kills => S2#k.nkills, restored => S2#k.restored, unnamed => S2#k.unnamed,
                             bad_probes => S2#k.bad, all_restored => All, max_lag_ns => S2#k.max_lag, late_kills => S2#k.late,
                             max_ns => S2#k.max_ns, hist => S2#k.hist},
              S2#k.kills}.

kill_loop(J, NKills, _T0, S) when J > NKills -> S;
kill_loop(J, NKills, T0, S0) ->
    Slot = T0 + J,
    S1 = wait_until(Slot, S0),
    Lag = erlang:monotonic_time(nanosecond) - erlang:convert_time_unit(Slot, millisecond, nanosecond),
    Late = case Lag > 1000000 of true -> 1; false -> 0 end,
    S2 = wait_for_free_worker(S1#k{max_lag = max(S1#k.max_lag, Lag), late = S1#k.late + Late}),
    I = pick(S2),
    S3 = case whereis(element(I + 1, S2#k.names)) of
             undefined ->  % cannot happen: a worker not pending has an answering replacement
                 S2#k{unnamed = S2#k.unnamed + 1};
             Pid ->
                 K = S2#k.nkills,
                 TKill = bench_util:now_ns(),
                 exit(Pid, kill),
                 Me = self(),
                 Name = element(I + 1, S2#k.names),
                 spawn(fun() -> prober(K, I, Name, Pid, Me) end),
                 S2#k{pending = maps:put(I, true, S2#k.pending), outstanding = S2#k.outstanding + 1,
                      kills = maps:put(K, {I, Pid, TKill, undefined, undefined}, S2#k.kills),
                      nkills = K + 1}
         end,
    kill_loop(J + 1, NKills, T0, S3).

%% Handles restored reports until the monotonic clock reaches Slot (ms): an
%% absolute timer (erlang:start_timer/4 with {abs, true}), so that the wait
%% ends at the slot, not a whole millisecond after the call.
wait_until(Slot, S) ->
    case erlang:monotonic_time(millisecond) >= Slot of
        true -> S;
        false -> wait_for_timer(erlang:start_timer(Slot, self(), slot, [{abs, true}]), S)
    end.

wait_for_timer(Timer, S) ->
    receive
        {restored, _, _, _, _} = R -> wait_for_timer(Timer, restored(R, S));
        {timeout, Timer, slot} -> S
    end.

wait_for_free_worker(S) when S#k.outstanding < S#k.n -> S;
wait_for_free_worker(S) ->
    receive {restored, _, _, _, _} = R -> wait_for_free_worker(restored(R, S)) end.

pick(S) ->
    I = rand:uniform(S#k.n) - 1,
    case maps:is_key(I, S#k.pending) of
        true -> pick(S);
        false -> I
    end.

restored({restored, K, New, At, Right}, S) ->
    {I, Old, TKill, _, _} = maps:get(K, S#k.kills),
    Ns = At - TKill,
    counters:add(S#k.hist, bench_util:hist_bucket(Ns) + 1, 1),
    S#k{pending = maps:remove(I, S#k.pending), outstanding = S#k.outstanding - 1,
        kills = maps:put(K, {I, Old, TKill, At, New}, S#k.kills), restored = S#k.restored + 1,
        bad = S#k.bad + (case Right of true -> 0; false -> 1 end), max_ns = max(S#k.max_ns, Ns)}.

drain_restored(S) when S#k.outstanding =:= 0 -> {S, true};
drain_restored(S) ->
    receive
        {restored, _, _, _, _} = R -> drain_restored(restored(R, S))
    after 10000 -> {S, false}
    end.

prober(K, I, Name, Old, Killer) ->
    case whereis(Name) of
        P when is_pid(P), P =/= Old ->
            Right = try gen_server:call(P, ping) of
                        I -> true;
                        _ -> false
                    catch
                        exit:_ -> false
                    end,
            Killer ! {restored, K, P, bench_util:now_ns(), Right};
        _ ->
            erlang:yield(),
            prober(K, I, Name, Old, Killer)
    end.

%% --- the client -----------------------------------------------------------------------

client(N, Names, Done, Driver) ->
    receive go -> ok end,
    rand:seed(exsss, {9, 9, 9}),
    Driver ! {client_done, client_loop(N, Names, Done, 0, 0, 0, [])}.

client_loop(N, Names, Done, Ok, Failed, Wrong, Failures) ->
    case atomics:get(Done, 1) of
        1 -> #{ok => Ok, failed => Failed, wrong => Wrong, failures => Failures};
        0 ->
            I = rand:uniform(N) - 1,
            Start = bench_util:now_ns(),
            try gen_server:call(element(I + 1, Names), ping) of
                I -> client_loop(N, Names, Done, Ok + 1, Failed, Wrong, Failures);
                _ -> client_loop(N, Names, Done, Ok, Failed, Wrong + 1, Failures)
            catch
                exit:Reason ->
                    End = bench_util:now_ns(),
                    Why = case Reason of
                              {killed, _} -> killed;
                              {noproc, _} -> noproc;
                              _ -> Reason
                          end,
                    client_loop(N, Names, Done, Ok, Failed + 1, Wrong, [{I, Start, End, Why} | Failures])
            end
    end.
