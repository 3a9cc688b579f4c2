%% gen_server_idle (BEAM peer of bench/gen_server_idle.cpp): N idle
%% gen_servers whose state is one small counter, started under one
%% simple_one_for_one supervisor by supervisor:start_child(Sup, []) in a
%% loop from one process.
%%
%%   erl +P 4000000 -noshell -pa DIR -s gen_server_idle main [N=1000000] [kill|stop]
%%
%% The driver starts the supervisor (this module is the callback module of
%% both the supervisor and the servers), reads RSS (VmRSS), starts the N
%% servers (timed), reads RSS again: bytes_per_server = (RSS after - RSS
%% before) / N, including the supervisor's per-child bookkeeping. It keeps
%% the pids of 100 servers at random positions (chosen before the loop).
%%
%% Verification (halt 1 otherwise): every start_child returned {ok, Pid};
%% count_children says N active workers; each kept server answers
%% gen_server:call(P, incr) with 1. Then the servers are torn down and the
%% driver waits until the process count is back where it was before the
%% supervisor (teardown_ms), as ember's: `kill` (the default) unlinks and
%% sends exit(Sup, kill), so that the supervisor's links end its children;
%% `stop` is gen_server:stop(Sup) (the supervisor stops its children one by
%% one: minutes for a million, over the 60 s limit).
%% Same RESULT line as ember's, plus runtime=beam.
-module(gen_server_idle).
-export([main/0, main/1]).
-export([init/1, handle_call/3, handle_cast/2, start_server/0]).

main() -> main([]).
main(Args) ->
    N = bench_util:arg(Args, 1, 1000000),
    How = case Args of [_, H | _] -> H; _ -> kill end,
    lists:member(How, [kill, stop]) orelse bench_util:fail("gen_server_idle: teardown must be kill or stop, got ~w", [How]),
    spawn(fun() -> driver(N, How) end).

%% --- callbacks: the supervisor (sup) and a server (a counter) ----------------------------

init(sup) ->
    {ok, {#{strategy => simple_one_for_one, intensity => 1, period => 5},
          [#{id => idle_server, start => {?MODULE, start_server, []},
             restart => permanent, shutdown => 5000, type => worker}]}};
init(counter) ->
    {ok, 0}.

start_server() -> gen_server:start_link(?MODULE, counter, []).

handle_call(incr, _From, N) -> {reply, N + 1, N + 1}.

handle_cast(_Msg, N) -> {noreply, N}.

%% --- the driver -------------------------------------------------------------------------

driver(N, How) ->
    bench_util:watchdog("gen_server_idle"),
    Base = erlang:system_info(process_count),
    rand:seed(exsss, {1, 2, 3}),
    Sample = lists:usort([rand:uniform(N) - 1 || _ <- lists:seq(1, min(N, 100))]),
    {ok, Sup} = supervisor:start_link(?MODULE, sup),
    RssBefore = bench_util:rss_bytes(),
    T0 = bench_util:now_ns(),
    {Kept, Bad} = start_all(0, N, Sup, Sample, [], 0),
    T1 = bench_util:now_ns(),
    RssAfter = bench_util:rss_bytes(),
    Active = proplists:get_value(active, supervisor:count_children(Sup)),
    Wrong = length([P || P <- Kept, (catch gen_server:call(P, incr)) =/= 1]),
    T2 = bench_util:now_ns(),
    case How of
        kill ->
            unlink(Sup),
            exit(Sup, kill);
        stop ->
            ok = gen_server:stop(Sup)
    end,
    bench_util:wait_process_count(Base),
    T3 = bench_util:now_ns(),
    {Bad, Active, Wrong} =:= {0, N, 0} orelse
        bench_util:fail("gen_server_idle: ~w starts did not return {ok, Pid}, ~w active children (expected ~w), "
                        "~w of ~w sampled servers did not answer incr with 1",
                        [Bad, Active, N, Wrong, length(Kept)]),
    io:format("RESULT gen_server_idle servers=~w bytes_per_server=~w start_us_per_server=~.3f teardown_ms=~.1f "
              "runtime=beam~n",
              [N, round((RssAfter - RssBefore) / N), (T1 - T0) / 1000 / N, (T3 - T2) / 1.0e6]),
    bench_util:finish().

%% Starts servers I..N-1; keeps the pids at the positions in Sample (sorted).
start_all(N, N, _Sup, _Sample, Kept, Bad) -> {Kept, Bad};
start_all(I, N, Sup, Sample, Kept, Bad) ->
    case supervisor:start_child(Sup, []) of
        {ok, P} ->
            case Sample of
                [I | Rest] -> start_all(I + 1, N, Sup, drop(I, Rest), [P | Kept], Bad);
                _ -> start_all(I + 1, N, Sup, Sample, Kept, Bad)
            end;
        _ ->
            start_all(I + 1, N, Sup, Sample, Kept, Bad + 1)
    end.

drop(I, [I | Rest]) -> drop(I, Rest);
drop(_I, Rest) -> Rest.
