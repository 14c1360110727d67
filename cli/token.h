/* token.h -- `maskloss token new`: a bearer token for maskloss-server --auth-file. */
#ifndef TOKEN_H
#define TOKEN_H

/* Runs `maskloss token ...`; argv holds the arguments after "token" (argv[0] is the command:
 * new). Returns the exit status. */
int maskloss_token(int argc, char **argv);

#endif /* TOKEN_H */
