%% W11 echo (BEAM peer of the server mode of bench/w11_echo.cpp): a gen_tcp
%% echo server on 127.0.0.1:PORT, one process per connection.
%%
%%   erl +P 4000000 -noshell -pa DIR -s w11_echo main PORT
%%
%% It is started by the ember load generator (ember_bench_w11 ... --runtime
%% beam -- erl ... -s w11_echo main), which appends PORT, measures this
%% emulator's VmRSS from /proc/<pid>/status (erl execs erlexec, which execs
%% beam.smp: one pid) and kills it when done. The listening socket is
%% binary, {packet, raw}, {active, false}, {nodelay, true} (inherited by
%% accepted sockets), {backlog, 1024}. One acceptor process accepts, spawns
%% a handler, hands it the socket (controlling_process) and accepts again;
%% the handler loops gen_tcp:recv(S, 64) / gen_tcp:send(S, Data) until the
%% peer closes. Nothing is printed on stdout.
-module(w11_echo).
-export([main/1]).

main([PortArg]) ->
    Port = list_to_integer(atom_to_list(PortArg)),
    spawn(fun() -> listen(Port) end),
    ok.

listen(Port) ->
    Opts = [binary, {packet, raw}, {active, false}, {nodelay, true}, {backlog, 1024},
            {reuseaddr, true}, {ip, {127, 0, 0, 1}}],
    case gen_tcp:listen(Port, Opts) of
        {ok, L} ->
            accept(L);
        {error, Why} ->
            io:format(standard_error, "w11_echo: listen on port ~w: ~p~n", [Port, Why]),
            erlang:halt(1)
    end.

accept(L) ->
    case gen_tcp:accept(L) of
        {ok, S} ->
            Handler = spawn(fun() -> receive {socket, Sock} -> echo(Sock) end end),
            case gen_tcp:controlling_process(S, Handler) of
                ok -> Handler ! {socket, S};
                {error, _} -> exit(Handler, kill), gen_tcp:close(S)  % already closed by the peer
            end,
            accept(L);
        {error, Why} ->
            io:format(standard_error, "w11_echo: accept: ~p~n", [Why]),
            erlang:halt(1)
    end.

echo(S) ->
    case gen_tcp:recv(S, 64) of
        {ok, Data} ->
            case gen_tcp:send(S, Data) of
                ok -> echo(S);
                {error, _} -> gen_tcp:close(S)
            end;
        {error, _} ->
            gen_tcp:close(S)
    end.
