@echo off
rem Create, show or remove the Windows scheduled task that runs the analytics refresh every
rem two hours, 00:00, 02:00 ... 22:00 (deploy\SCHEDULE.md), as the current user; with
rem /every MINUTES, every that many minutes from 00:00 instead (change detection runs
rem every 10 to 15 minutes).
rem
rem Task Scheduler starts a task in C:\Windows\System32 with no virtualenv and drops what it
rem prints. So the task changes into this project's directory (where the runner finds .env
rem and logs\), runs the project's own .venv python.exe by absolute path, and appends
rem anything printed outside the runner's log to logs\cron_output.log. A run still going
rem when the next is due is left alone (Task Scheduler's default: no second instance),
rem which matches the runner's own lock.
rem
rem Usage: cron_setup.bat [/print] [/uninstall] [/every MINUTES]
setlocal EnableExtensions DisableDelayedExpansion

set "TASK_NAME=Analytics_Refresh_Cron"
set "ENTRY=analytics_refresh_cron.py"
rem %~dp0 ends with a backslash, and \" would turn the closing quote into a literal one.
set "PROJECT_DIR=%~dp0"
if "%PROJECT_DIR:~-1%"=="\" set "PROJECT_DIR=%PROJECT_DIR:~0,-1%"
set "PYTHON=%PROJECT_DIR%\.venv\Scripts\python.exe"

rem The schedule: every 2 hours from 00:00, i.e. 00:00, 02:00 ... 22:00 each day.
set "SCHEDULE=/SC HOURLY /MO 2 /ST 00:00"
set "MODE=install"
set "EVERY="

:parse
if "%~1"=="" goto parsed
if /i "%~1"=="/print" goto opt_print
if /i "%~1"=="/uninstall" goto opt_uninstall
if /i "%~1"=="/every" goto opt_every
if /i "%~1"=="/?" goto usage
if /i "%~1"=="/help" goto usage
echo cron_setup.bat: unknown option %1 1>&2
call :usage 1>&2
exit /b 2

:opt_print
set "MODE=print"
shift
goto parse

:opt_uninstall
set "MODE=uninstall"
shift
goto parse

:opt_every
set "EVERY=%~2"
shift
shift
rem Whole minutes from 1 to 1439 (schtasks' range for /SC MINUTE), no leading zero.
if not defined EVERY goto bad_every
set "NONDIGIT="
for /f "delims=0123456789" %%c in ("%EVERY%") do set "NONDIGIT=%%c"
if defined NONDIGIT goto bad_every
if "%EVERY:~0,1%"=="0" goto bad_every
if %EVERY% GTR 1439 goto bad_every
set "SCHEDULE=/SC MINUTE /MO %EVERY% /ST 00:00"
goto parse

:bad_every
echo cron_setup.bat: /every needs whole minutes from 1 to 1439, e.g. /every 10 1>&2
exit /b 2

:parsed

rem Delayed expansion from here on: !VAR! values are not parsed again, so a path with
rem spaces, parentheses or ampersands stays one literal string. (No literal ! below.)
setlocal EnableDelayedExpansion
if "%MODE%"=="uninstall" goto uninstall

rem Refuse to create a task that cannot work: it would fail unseen every two hours.
if not exist "!PROJECT_DIR!\!ENTRY!" goto no_entry
if not exist "!PYTHON!" goto no_venv
if not exist "!PROJECT_DIR!\.env" goto no_env

rem The schedule's interval goes into the task's command: the runs' freshness promise and
rem deadline follow it. A schedule shorter than two hours without a change query refreshes
rem every key every run: the same step warns of it (and of a .env that says otherwise).
rem Installing also sets it in .env, for the commands run by hand (/print changes nothing).
set "INTERVAL=120"
if defined EVERY set "INTERVAL=!EVERY!"
set "WRITE_DOTENV=--write-dotenv"
if "%MODE%"=="print" set "WRITE_DOTENV="
pushd "!PROJECT_DIR!"
"!PYTHON!" -m analytics_refresh.config.schedule !WRITE_DOTENV! --minutes !INTERVAL! >nul
popd

rem The task's command. Inside /TR, \" is a literal quote (schtasks' own quoting rule);
rem no blank before && keeps the value free of a trailing space.
set "TASK_RUN=cmd /c set REFRESH_INTERVAL_MINUTES=!INTERVAL!&& cd /d \"!PROJECT_DIR!\" && \"!PYTHON!\" !ENTRY! >> logs\cron_output.log 2>&1"

if "%MODE%"=="print" goto print

if not exist "!PROJECT_DIR!\logs" mkdir "!PROJECT_DIR!\logs"
rem /F replaces a task of the same name, so running this again changes nothing else.
schtasks /Create /TN "!TASK_NAME!" /TR "!TASK_RUN!" !SCHEDULE! /F
if errorlevel 1 exit /b 1
echo.
echo Scheduled task !TASK_NAME! runs on !SCHEDULE! as !USERNAME!, in this
echo computer's time zone, while !USERNAME! is logged on. Its command:
echo   !TASK_RUN!
echo Check it:    schtasks /Query /TN !TASK_NAME! /V /FO LIST
echo Run it now:  schtasks /Run /TN !TASK_NAME!
echo Its log:     type "!PROJECT_DIR!\logs\analytics_refresh_cron.log"
echo Remove it:   cron_setup.bat /uninstall   or   schtasks /Delete /TN !TASK_NAME! /F
exit /b 0

:print
echo schtasks /Create /TN "!TASK_NAME!" /TR "!TASK_RUN!" !SCHEDULE! /F
exit /b 0

:uninstall
schtasks /Query /TN "!TASK_NAME!" >nul 2>&1
if errorlevel 1 goto nothing_to_remove
schtasks /Delete /TN "!TASK_NAME!" /F
if errorlevel 1 exit /b 1
echo Removed the scheduled task !TASK_NAME!.
exit /b 0

:nothing_to_remove
echo There is no scheduled task !TASK_NAME!: nothing to remove.
exit /b 0

:no_entry
echo cron_setup.bat: "!PROJECT_DIR!\!ENTRY!" is missing 1>&2
echo   fix: run cron_setup.bat from the project's own directory (it schedules the project it sits in) 1>&2
exit /b 1

:no_venv
echo cron_setup.bat: there is no virtualenv at "!PROJECT_DIR!\.venv" 1>&2
echo   fix: cd /d "!PROJECT_DIR!" then: py -3 -m venv .venv 1>&2
echo        .venv\Scripts\python -m pip install -r requirements.txt 1>&2
echo        .venv\Scripts\python -m pip install -e . 1>&2
exit /b 1

:no_env
echo cron_setup.bat: there is no "!PROJECT_DIR!\.env" with the settings 1>&2
echo   fix: cd /d "!PROJECT_DIR!" then: copy .env.example .env 1>&2
echo        and set DATABASE_URL, API_SECRET_KEY and ANALYTICS_API_URL in it 1>&2
exit /b 1

:usage
echo Usage: cron_setup.bat [/print] [/uninstall] [/every MINUTES]
echo   (no switch)  create or replace the scheduled task Analytics_Refresh_Cron
echo   /print       show the schtasks command that would be run, change nothing
echo   /uninstall   delete the scheduled task
echo   /every N     run every N minutes from 00:00 (1 to 1439) instead of every 2 hours;
echo                under 120, set REFRESH_CHANGE_SQL_FILE in .env first (change-aware
echo                refresh), or every run refreshes every key
echo   The task sets REFRESH_INTERVAL_MINUTES to the schedule's interval.
exit /b 0
