%% W10 dist (BEAM peer of bench/w10_dist.cpp): two BEAM nodes on this
%% machine, over Erlang distribution on loopback. A process on node A makes
%% M round trips to a process on node B, then sends M one-way messages and
%% waits for B to acknowledge the count. One condition per run:
%%
%%   erl -noshell -pa DIR -s w10_dist main [M=100000] [idle|awake=idle] [SPINNER]
%%
%% idle: nothing else runs. awake: SPINNER (the path of ember_bench_w10)
%% is started as a port, `SPINNER --spin`: one SCHED_IDLE busy thread pinned
%% to each CPU, the same spinner ember's awake run uses; it stops when the
%% port closes. Both nodes keep BEAM's defaults (one scheduler per core,
%% default busy-wait), as ember's nodes keep ember's.
%%
%% Nodes. This node becomes a@127.0.0.1 (longnames: no DNS); node B is
%% started with the `peer` module (OTP 25), with this module's directory in
%% its code path, and B's echo is spawned there (spawn/4). Distribution
%% needs epmd: if none answers, the driver runs one of its own in the
%% foreground as a port (listening on 127.0.0.1 only) and kills it (by its
%% OS pid) at the end, so no daemon is left behind.
%%
%% Same workload and message shapes as ember's (bench/w10.capnp):
%% warm-up min(M, 1000) round trips, unmeasured; then M round trips of
%% {ping, Seq, From} answered with {ping, Seq, Echo}, each timed
%% (erlang:monotonic_time) into the histogram of bench/latency_hist.hpp (a
%% `counters` array, bench_util:hist_bucket/1); then M one-way {msg, Seq},
%% {done, M, From}, and B's {ack, Count, InOrder, Pings}.
%%
%% Verification (halt 1 otherwise): every reply carried the seq sent; B got
%% M messages, in order, and answered warm-up + M pings; the histogram holds
%% M samples. Same RESULT line as ember's, plus runtime=beam.
-module(w10_dist).
-export([main/0, main/1, echo/0]).

-define(BUCKETS, (256 + 56 * 128)).

main() -> main([]).
main(Args) ->
    M = bench_util:arg(Args, 1, 100000),
    Condition = case Args of [_, C | _] -> atom_to_list(C); _ -> "idle" end,
    Spinner = case Args of [_, _, S | _] -> atom_to_list(S); _ -> none end,
    lists:member(Condition, ["idle", "awake"]) orelse
        bench_util:fail("W10: the condition must be idle or awake, got ~s", [Condition]),
    Condition =:= "awake" andalso Spinner =:= none andalso
        bench_util:fail("W10: the awake condition needs the spinner (ember_bench_w10) as third argument", []),
    spawn(fun() -> driver(M, Condition, Spinner) end).

driver(M, Condition, Spinner) ->
    bench_util:watchdog("W10 condition=" ++ Condition),
    Epmd = ensure_epmd(),
    Spin = start_spinner(Condition, Spinner),
    Suffix = os:getpid(),
    {ok, _} = net_kernel:start([list_to_atom("w10a_" ++ Suffix ++ "@127.0.0.1"), longnames]),
    Dir = filename:dirname(code:which(?MODULE)),
    {ok, Peer, Node} = peer:start_link(#{name => list_to_atom("w10b_" ++ Suffix), host => "127.0.0.1",
                                         longnames => true, args => ["-pa", Dir]}),
    Echo = spawn(Node, ?MODULE, echo, []),
    Me = self(),
    Warm = min(M, 1000),
    BadWarm = warm_loop(0, Warm, Echo, Me, 0),
    Hist = counters:new(?BUCKETS, []),
    {Sum, Max, BadTimed} = timed_loop(Warm, Warm + M, Echo, Me, Hist, 0, 0, 0),
    T0 = bench_util:now_ns(),
    send_loop(0, M, Echo),
    Echo ! {done, M, Me},
    {Count, InOrder, Pings} = receive {ack, C, O, P} -> {C, O, P} end,
    T1 = bench_util:now_ns(),
    Counts = [counters:get(Hist, I) || I <- lists:seq(1, ?BUCKETS)],
    Samples = lists:sum(Counts),
    {BadWarm + BadTimed, Count, InOrder, Pings, Samples} =:= {0, M, true, Warm + M, M} orelse
        bench_util:fail("W10 (~s): ~w replies with the wrong seq; B got ~w one-way messages (expected ~w), "
                        "in order: ~w, answered ~w pings (expected ~w); ~w round trips timed",
                        [Condition, BadWarm + BadTimed, Count, M, InOrder, Pings, Warm + M, Samples]),
    io:format("RESULT W10 condition=~s remote_roundtrip_us=~.2f remote_msgs_per_s=~w roundtrip_p50_us=~.2f "
              "roundtrip_p99_us=~.2f roundtrip_max_us=~.1f runtime=beam~n",
              [Condition, Sum / M / 1000, round(M / ((T1 - T0) / 1.0e9)),
               bench_util:hist_quantile_ns(Counts, M, 0.5) / 1000,
               bench_util:hist_quantile_ns(Counts, M, 0.99) / 1000, Max / 1000]),
    peer:stop(Peer),
    Spin =:= none orelse port_close(Spin),
    stop_epmd(Epmd),
    bench_util:finish().

warm_loop(N, N, _Echo, _Me, Bad) -> Bad;
warm_loop(I, N, Echo, Me, Bad) ->
    Echo ! {ping, I, Me},
    receive {ping, S, _} -> warm_loop(I + 1, N, Echo, Me, Bad + ok(S, I)) end.

timed_loop(N, N, _Echo, _Me, _Hist, Sum, Max, Bad) -> {Sum, Max, Bad};
timed_loop(I, N, Echo, Me, Hist, Sum, Max, Bad) ->
    T0 = erlang:monotonic_time(nanosecond),
    Echo ! {ping, I, Me},
    receive {ping, S, _} -> ok end,
    Ns = erlang:monotonic_time(nanosecond) - T0,
    counters:add(Hist, bench_util:hist_bucket(Ns) + 1, 1),
    timed_loop(I + 1, N, Echo, Me, Hist, Sum + Ns, max(Max, Ns), Bad + ok(S, I)).

ok(S, S) -> 0;
ok(_, _) -> 1.

send_loop(N, N, _Echo) -> ok;
send_loop(I, N, Echo) ->
    Echo ! {msg, I},
    send_loop(I + 1, N, Echo).

%% Node B's process: answers pings, counts one-way messages (checking their
%% order) and acknowledges a done with what it saw since the previous one.
echo() -> echo(0, true, 0).

echo(Count, InOrder, Pings) ->
    receive
        {ping, Seq, From} ->
            From ! {ping, Seq, self()},
            echo(Count, InOrder, Pings + 1);
        {msg, Seq} ->
            echo(Count + 1, InOrder andalso Seq =:= Count, Pings);
        {done, _N, From} ->
            From ! {ack, Count, InOrder, Pings},
            echo(0, true, Pings)
    end.

%% --- epmd and the spinner ------------------------------------------------------

%% none if an epmd answers already, else the port of one started here.
ensure_epmd() ->
    case erl_epmd:names() of
        {ok, _} -> none;
        _ ->
            Exe = os:find_executable("epmd"),
            Exe =/= false orelse bench_util:fail("W10: epmd is not in PATH", []),
            Port = open_port({spawn_executable, Exe}, [{args, ["-address", "127.0.0.1"]}, exit_status]),
            wait_epmd(Port, 200),
            Port
    end.

wait_epmd(_Port, 0) -> bench_util:fail("W10: epmd did not start", []);
wait_epmd(Port, Tries) ->
    case erl_epmd:names() of
        {ok, _} -> ok;
        _ ->
            receive {Port, {exit_status, S}} -> bench_util:fail("W10: epmd exited with status ~w", [S])
            after 10 -> wait_epmd(Port, Tries - 1)
            end
    end.

stop_epmd(none) -> ok;
stop_epmd(Port) ->
    {os_pid, OsPid} = erlang:port_info(Port, os_pid),
    os:cmd("kill " ++ integer_to_list(OsPid)),
    ok.

start_spinner("idle", _) -> none;
start_spinner("awake", Exe) ->
    Port = open_port({spawn_executable, Exe}, [{args, ["--spin"]}, {line, 200}, exit_status]),
    receive
        {Port, {data, {eol, "spinning " ++ N}}} ->
            io:format(standard_error, "# W10 awake: ~s SCHED_IDLE threads~n", [N]),
            Port;
        {Port, Other} -> bench_util:fail("W10: the spinner did not start: ~p", [Other])
    after 10000 -> bench_util:fail("W10: the spinner did not start within 10 s", [])
    end.
