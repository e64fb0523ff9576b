#ifndef CLUSTERWS_CHIREDIS_SHIM_H
#define CLUSTERWS_CHIREDIS_SHIM_H

// Only hiredis's reply reader is used: sockets belong to SwiftNIO, so no
// blocking hiredis call (redisConnect, redisCommand, redisGetReply) is ever
// made. hiredis on Debian 12 is 0.14.1: RESP2, no TLS, no push replies.
#include <hiredis/hiredis.h>
#include <hiredis/read.h>

#endif
