// A run of signatures that one thread makes back to back (Issuer::issue_batch signs a batch's
// certificates in one). A device that signs one request at a time behind a lock (a TPM connection:
// tokens/tpm2/esys.h) stays with that thread for the whole run, instead of being taken and given back for
// every signature: a thread that wants the device meanwhile waits for the end of the run, not for each
// signature, so the device goes from one signature to the next without a hand-over between threads
// (measured in docs/benchmarks.md). Devices that sign in parallel (PKCS#11 sessions) ignore runs.
#pragma once

namespace hwca {

class SigningRun {
 public:
  // A device that can be kept for a run: it still holds its lock when it asks to be kept, and gives it
  // up in release_after_run().
  class Device {
   public:
    virtual void release_after_run() noexcept = 0;

   protected:
    ~Device() = default;
  };

  // Opens a run on this thread (runs nest: the outermost one ends it).
  SigningRun();
  // Ends the run: every device kept for it is released, in the order they were kept.
  ~SigningRun();
  SigningRun(const SigningRun&) = delete;
  SigningRun& operator=(const SigningRun&) = delete;

  // For a device that has just finished an operation on this thread, still holding its lock. True when
  // a run is open on this thread: the device is kept until the run ends (release_after_run is called
  // then; it must outlive the run). False when none is: the device releases itself now.
  static bool keep(Device& device) noexcept;
};

}  // namespace hwca
