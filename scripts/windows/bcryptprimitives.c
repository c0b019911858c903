/*
 * Test-only stand-in for Windows' bcryptprimitives.dll, for Wine 8.0 which
 * lacks it. Rust's std (1.78+) imports ProcessPrng from it for HashMap keys
 * and getrandom; without it no Rust binary starts under Wine 8.0.
 *
 * ProcessPrng forwards to RtlGenRandom (advapi32!SystemFunction036), the
 * OS CSPRNG Wine does have. RtlGenRandom takes a ULONG length, so larger
 * requests are served in chunks. Never shipped: scripts/windows.sh copies
 * it into a throwaway Wine prefix.
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length > 0) {
        ULONG chunk = length > 0x40000000 ? 0x40000000 : (ULONG)length;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
